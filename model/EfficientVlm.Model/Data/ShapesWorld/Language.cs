using System.Globalization;

namespace EfficientVlm.Model.Data.ShapesWorld;

/// <summary>
/// The fixed language of ShapesWorld (shapesworld.md "Language rules"): every generator of the spec
/// produces exactly these strings. Lower case, no final period, numbers as words in captions and
/// statements, digits in VQA count answers, "a"/"an" by the next word's first letter.
/// </summary>
public static class Language
{
    public static string Word(Shape s) => s.ToString().ToLowerInvariant();
    public static string Word(Colour c) => c.ToString().ToLowerInvariant();
    public static string Word(ObjectSize s) => s.ToString().ToLowerInvariant();

    public static string Plural(Shape s) => Word(s) + "s";

    public static string Number(int n) => n switch
    {
        0 => "zero", 1 => "one", 2 => "two", 3 => "three", 4 => "four",
        _ => n.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>"a" or "an" followed by the phrase.</summary>
    public static string Article(string phrase) => ArticleFor(phrase) + " " + phrase;

    /// <summary>"an" before a word that starts with a vowel, else "a".</summary>
    public static string ArticleFor(string word) => "aeiou".Contains(word[0]) ? "an" : "a";

    /// <summary>"&lt;size&gt; &lt;color&gt; &lt;shape&gt;"</summary>
    public static string Describe(SceneObject o) => $"{Word(o.Size)} {Word(o.Colour)} {Word(o.Shape)}";

    public static readonly string[] RowNames = ["top", "middle", "bottom"];
    public static readonly string[] ColumnNames = ["left", "center", "right"];

    /// <summary>The cell's name: "&lt;row&gt; &lt;column&gt;", except the middle cell, "center".</summary>
    public static string CellName(int row, int column) =>
        row == 1 && column == 1 ? "center" : $"{RowNames[row]} {ColumnNames[column]}";

    /// <summary>Joins with ", " and " and " before the last.</summary>
    public static string JoinList(IReadOnlyList<string> items) => items.Count switch
    {
        0 => "",
        1 => items[0],
        _ => string.Join(", ", items.Take(items.Count - 1)) + " and " + items[^1],
    };

    /// <summary>The relations that hold from a to b (from their cells): above, below, left of, right of.</summary>
    public static IEnumerable<string> Relations(SceneObject a, SceneObject b)
    {
        if (a.Row < b.Row) yield return "above";
        if (a.Row > b.Row) yield return "below";
        if (a.Column < b.Column) yield return "left of";
        if (a.Column > b.Column) yield return "right of";
    }

    /// <summary>The five captions of an image, in the order of shapesworld.md.</summary>
    public static string[] Captions(Scene scene, Random rng)
    {
        var objects = scene.Objects;
        var shuffled = objects.OrderBy(_ => rng.Next()).ToList();
        var list = JoinList(shuffled.Select(o => Article(Describe(o))).ToList());

        var count = $"{Number(objects.Count)} {(objects.Count == 1 ? "shape" : "shapes")} on a gray background";

        var placed = objects[rng.Next(objects.Count)];
        var place = $"{Article(Describe(placed))} in the {CellName(placed.Row, placed.Column)}";

        string relation;
        if (objects.Count == 1)
        {
            var only = objects[0];
            relation = Article($"{Word(only.Colour)} {Word(only.Shape)}");
        }
        else
        {
            var pair = objects.OrderBy(_ => rng.Next()).Take(2).ToArray();
            var holds = Relations(pair[0], pair[1]).ToArray();
            var chosen = holds[rng.Next(holds.Length)];
            relation = $"{Article(Describe(pair[0]))} {chosen} {Article(Describe(pair[1]))}";
        }

        var parts = new List<string>();
        foreach (var shape in Scene.Shapes)
        {
            int n = objects.Count(o => o.Shape == shape);
            if (n > 0) parts.Add($"{Number(n)} {(n == 1 ? Word(shape) : Plural(shape))}");
        }
        var summary = JoinList(parts);
        return [list, count, place, relation, summary];
    }
}
