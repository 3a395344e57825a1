using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace EfficientVlm.Model.Data.ShapesWorld;

/// <summary>Which of the project's two renderers of the spec draws the images.</summary>
public enum RenderStyle
{
    /// <summary>Signed-distance coverage (the default, every data set the project trains on).</summary>
    Coverage,

    /// <summary>4 x 4 supersampling, reverse draw order, Box-Muller noise: the check set of another renderer.</summary>
    Supersampled,
}

/// <summary>
/// Draws a scene on a 64 x 64 canvas by hand (ImageSharp.Drawing is not available): gray background
/// with per-channel offsets and Gaussian noise on the background only, then each object in its
/// jittered colour with anti-aliased edges from a signed distance (coverage = clamp(d + 0.5, 0, 1)).
/// Deterministic for a given <see cref="Random"/> state.
/// </summary>
public static class Renderer
{
    /// <summary>Draws <paramref name="scene"/> in the given style (both within the spec's freedom: docs/data.md).</summary>
    public static Image<Rgb24> Render(Scene scene, Random rng, RenderStyle style) =>
        style == RenderStyle.Supersampled ? RenderSupersampled(scene, rng) : Render(scene, rng);

    private static readonly Dictionary<Colour, (int R, int G, int B)> Base = new()
    {
        [Colour.Red] = (220, 40, 40),
        [Colour.Green] = (40, 170, 60),
        [Colour.Blue] = (40, 80, 220),
        [Colour.Yellow] = (230, 200, 40),
        [Colour.Purple] = (150, 60, 190),
        [Colour.Orange] = (240, 140, 30),
    };

    public static Image<Rgb24> Render(Scene scene, Random rng)
    {
        const int n = Scene.Canvas;
        var (background, sigma, colours) = Palette(scene, rng);

        // background: gray + per-image channel offsets + Gaussian noise (Marsaglia's polar method, two normals per draw)
        var canvas = new double[n * n * 3];
        for (int i = 0; i < canvas.Length; i += 2)
        {
            double u, v, q;
            do
            {
                u = 2 * rng.NextDouble() - 1;
                v = 2 * rng.NextDouble() - 1;
                q = u * u + v * v;
            }
            while (q >= 1 || q == 0);
            double f = Math.Sqrt(-2 * Math.Log(q) / q);
            canvas[i] = background[i % 3] + sigma * u * f;
            canvas[i + 1] = background[(i + 1) % 3] + sigma * v * f;
        }

        // objects in draw order, each over its bounding box only
        for (int o = 0; o < scene.Objects.Count; o++)
        {
            var obj = scene.Objects[o];
            Paint(canvas, obj, colours[o], (x, y) => Coverage(obj, x + 0.5, y + 0.5));
        }

        return ToImage(canvas);
    }

    /// <summary>
    /// A second renderer of the spec, for checking that models do not learn one renderer's pixels: the same
    /// background law drawn with Box-Muller normals, objects in reverse order, and coverage counted on a 4 x 4
    /// grid of sub-pixel samples with hard inside tests instead of a signed distance.
    /// </summary>
    public static Image<Rgb24> RenderSupersampled(Scene scene, Random rng)
    {
        const int n = Scene.Canvas, sub = 4;
        var (background, sigma, colours) = Palette(scene, rng);

        var canvas = new double[n * n * 3];
        for (int i = 0; i < canvas.Length; i += 2)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            double r = Math.Sqrt(-2 * Math.Log(u1));
            canvas[i] = background[i % 3] + sigma * r * Math.Cos(2 * Math.PI * u2);
            canvas[i + 1] = background[(i + 1) % 3] + sigma * r * Math.Sin(2 * Math.PI * u2);
        }

        for (int o = scene.Objects.Count - 1; o >= 0; o--)
        {
            var obj = scene.Objects[o];
            Paint(canvas, obj, colours[o], (x, y) =>
            {
                int hits = 0;
                for (int sy = 0; sy < sub; sy++)
                    for (int sx = 0; sx < sub; sx++)
                        if (Inside(obj, x + (sx + 0.5) / sub, y + (sy + 0.5) / sub)) hits++;
                return (double)hits / (sub * sub);
            });
        }
        return ToImage(canvas);
    }

    /// <summary>Whether the point (px, py) is inside the object (its outline included).</summary>
    public static bool Inside(SceneObject o, double px, double py)
    {
        double half = o.Side / 2, dx = px - o.X, dy = py - o.Y;
        return o.Shape switch
        {
            Shape.Circle => dx * dx + dy * dy <= half * half,
            Shape.Square => Math.Abs(dx) <= half && Math.Abs(dy) <= half,
            // apex at (0, -half), base at y = +half from -half to +half: |dx| grows from 0 to half as y goes down
            _ => dy >= -half && dy <= half && Math.Abs(dx) <= (dy + half) / 2,
        };
    }

    private static Image<Rgb24> ToImage(double[] canvas)
    {
        const int n = Scene.Canvas;
        var image = new Image<Rgb24>(n, n);
        image.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < n; y++)
            {
                var row = rows.GetRowSpan(y);
                for (int x = 0; x < n; x++)
                {
                    int at = (y * n + x) * 3;
                    row[x] = new Rgb24(ToByte(canvas[at]), ToByte(canvas[at + 1]), ToByte(canvas[at + 2]));
                }
            }
        });
        return image;
    }

    /// <summary>
    /// Blends one object's colour over its bounding box (plus a pixel) of the canvas, each pixel by
    /// <paramref name="alpha"/>(x, y), the share of the pixel it covers; uncovered pixels are left as they are.
    /// </summary>
    private static void Paint(double[] canvas, SceneObject obj, int[] colour, Func<int, int, double> alpha)
    {
        const int n = Scene.Canvas;
        double half = obj.Side / 2 + 1;
        int x0 = Math.Max(0, (int)Math.Floor(obj.X - half)), x1 = Math.Min(n - 1, (int)Math.Ceiling(obj.X + half));
        int y0 = Math.Max(0, (int)Math.Floor(obj.Y - half)), y1 = Math.Min(n - 1, (int)Math.Ceiling(obj.Y + half));
        for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++)
        {
            double a = alpha(x, y);
            if (a <= 0) continue;
            int at = (y * n + x) * 3;
            for (int c = 0; c < 3; c++) canvas[at + c] = canvas[at + c] * (1 - a) + colour[c] * a;
        }
    }

    /// <summary>
    /// The spec's random draws of an image, in this order: the gray level, its per-channel offsets, the noise sigma,
    /// then each object's jittered colour.
    /// </summary>
    private static (double[] Background, double Sigma, int[][] Colours) Palette(Scene scene, Random rng)
    {
        int gray = rng.Next(200, 251);
        var background = new double[3];
        for (int c = 0; c < 3; c++) background[c] = gray + rng.Next(-5, 6);
        double sigma = Scene.Uniform(rng, 0, 6);
        var colours = scene.Objects.Select(o =>
        {
            var b = Base[o.Colour];
            return new[] { Clamp(b.R + rng.Next(-15, 16)), Clamp(b.G + rng.Next(-15, 16)), Clamp(b.B + rng.Next(-15, 16)) };
        }).ToArray();
        return (background, sigma, colours);
    }

    private static byte ToByte(double v) => (byte)Math.Clamp(Math.Round(v), 0, 255);

    /// <summary>Fraction of pixel (px, py) (its centre) inside the object, from the signed distance to its outline.</summary>
    public static double Coverage(SceneObject o, double px, double py)
    {
        double half = o.Side / 2;
        double inside; // signed distance: positive inside
        switch (o.Shape)
        {
            case Shape.Circle:
                inside = half - Math.Sqrt((px - o.X) * (px - o.X) + (py - o.Y) * (py - o.Y));
                break;
            case Shape.Square:
                return Math.Clamp(half - Math.Abs(px - o.X) + 0.5, 0, 1) * Math.Clamp(half - Math.Abs(py - o.Y) + 0.5, 0, 1);
            default:
            {
                // isosceles, apex up, height = base = side; bounding box centred on (X, Y)
                (double X, double Y) apex = (o.X, o.Y - half), left = (o.X - half, o.Y + half), right = (o.X + half, o.Y + half);
                inside = Math.Min(Edge(apex, left, px, py), Math.Min(Edge(left, right, px, py), Edge(right, apex, px, py)));
                break;
            }
        }
        return Math.Clamp(inside + 0.5, 0, 1);
    }

    /// <summary>Distance from (px, py) to the line a->b, positive on the interior side (vertices listed counter-clockwise on screen).</summary>
    private static double Edge((double X, double Y) a, (double X, double Y) b, double px, double py)
    {
        double dx = b.X - a.X, dy = b.Y - a.Y;
        return ((px - a.X) * dy - (py - a.Y) * dx) / Math.Sqrt(dx * dx + dy * dy);
    }

    private static int Clamp(int v) => Math.Clamp(v, 0, 255);
}
