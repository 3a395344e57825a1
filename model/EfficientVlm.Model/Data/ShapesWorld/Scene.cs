namespace EfficientVlm.Model.Data.ShapesWorld;

public enum Shape { Circle, Square, Triangle }

public enum Colour { Red, Green, Blue, Yellow, Purple, Orange }

public enum ObjectSize { Small, Large }

/// <summary>One object: its attributes, its grid cell (row 0 = top, column 0 = left), its continuous centre and side in pixels.</summary>
public sealed record SceneObject(Shape Shape, Colour Colour, ObjectSize Size, int Row, int Column, double X, double Y, double Side)
{
    public (Shape, Colour, ObjectSize) Kind => (Shape, Colour, Size);
}

/// <summary>A ShapesWorld scene: 1 to 4 objects in distinct cells of a 3 x 3 grid on a 64 x 64 canvas.</summary>
public sealed record Scene(IReadOnlyList<SceneObject> Objects)
{
    public const int Canvas = 64;
    public const double Cell = Canvas / 3.0;

    public static readonly Shape[] Shapes = Enum.GetValues<Shape>();
    public static readonly Colour[] Colours = Enum.GetValues<Colour>();

    /// <summary>Samples a scene as shapesworld.md specifies.</summary>
    public static Scene Sample(Random rng)
    {
        int count = rng.Next(1, 5);
        var cells = Enumerable.Range(0, 9).OrderBy(_ => rng.Next()).Take(count).ToArray();
        var objects = new List<SceneObject>();
        foreach (var cell in cells)
        {
            SceneObject candidate;
            do
            {
                var shape = Shapes[rng.Next(Shapes.Length)];
                var colour = Colours[rng.Next(Colours.Length)];
                var size = rng.Next(2) == 0 ? ObjectSize.Small : ObjectSize.Large;
                int row = cell / 3, column = cell % 3;
                double x = (column + 0.5) * Cell + Uniform(rng, -3, 3);
                double y = (row + 0.5) * Cell + Uniform(rng, -3, 3);
                double side = size == ObjectSize.Small ? Uniform(rng, 8, 10) : Uniform(rng, 14, 17);
                candidate = new SceneObject(shape, colour, size, row, column, x, y, side);
            }
            while (objects.Any(o => o.Kind == candidate.Kind)); // no two objects share shape, colour and size
            objects.Add(candidate);
        }
        return new Scene(objects);
    }

    public static double Uniform(Random rng, double low, double high) => low + rng.NextDouble() * (high - low);
}
