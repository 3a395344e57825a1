using System.Text.RegularExpressions;

namespace EfficientVlm.Model.Data.ShapesWorld;

/// <summary>An NLVR2 statement and the function that decides it for a (left, right) pair of scenes.</summary>
public sealed record Statement(string Sentence, Func<Scene, Scene, bool> Holds);

/// <summary>NLVR2 statements per shapesworld.md: five families, each sentence used once true and once false.</summary>
public static class Statements
{
    public enum Family { Compare, BothOnly, ExactCount, Exist, Relation }

    private static readonly Family[] Families = Enum.GetValues<Family>();

    /// <summary>
    /// The family whose template wrote <paramref name="sentence"/>, read back from the sentence; null for a
    /// sentence no template writes (a real NLVR2 statement, say).
    /// </summary>
    public static Family? FamilyOf(string sentence)
    {
        foreach (var (family, pattern) in Templates)
            if (pattern.IsMatch(sentence)) return family;
        return null;
    }

    // One pattern per family, mirroring the sentences Sample writes.
    private static readonly (Family Family, Regex Pattern)[] Templates =
    [
        (Family.Compare, new(@"^the left image contains (more \w+ than|fewer \w+ than|the same number of \w+ as) the right image$")),
        (Family.BothOnly, new(@"^(both images contain an? \w+ object|only one image contains an? \w+)$")),
        (Family.ExactCount, new(@"^there (is exactly one object|are exactly \w+ objects) in the (left|right) image$")),
        (Family.Exist, new(@"^there is an? \w+ \w+ in the (left|right) image$")),
        (Family.Relation, new(@"^the (left|right) image has an? \w+ above an? \w+$")),
    ];

    public static Statement Sample(Random rng) => Sample(Families[rng.Next(Families.Length)], rng);

    public static Statement Sample(Family family, Random rng)
    {
        switch (family)
        {
            case Family.Compare:
            {
                var shape = Scene.Shapes[rng.Next(Scene.Shapes.Length)];
                var plural = Language.Plural(shape);
                int Count(Scene s) => s.Objects.Count(o => o.Shape == shape);
                return rng.Next(3) switch
                {
                    0 => new($"the left image contains more {plural} than the right image", (l, r) => Count(l) > Count(r)),
                    1 => new($"the left image contains fewer {plural} than the right image", (l, r) => Count(l) < Count(r)),
                    _ => new($"the left image contains the same number of {plural} as the right image", (l, r) => Count(l) == Count(r)),
                };
            }
            case Family.BothOnly:
            {
                if (rng.Next(2) == 0)
                {
                    var colour = Scene.Colours[rng.Next(Scene.Colours.Length)];
                    bool Has(Scene s) => s.Objects.Any(o => o.Colour == colour);
                    return new($"both images contain {Language.Article(Language.Word(colour))} object", (l, r) => Has(l) && Has(r));
                }
                var shape = Scene.Shapes[rng.Next(Scene.Shapes.Length)];
                bool HasShape(Scene s) => s.Objects.Any(o => o.Shape == shape);
                return new($"only one image contains a {Language.Word(shape)}", (l, r) => HasShape(l) != HasShape(r));
            }
            case Family.ExactCount:
            {
                int n = rng.Next(1, 5);
                bool left = rng.Next(2) == 0;
                var side = left ? "left" : "right";
                var sentence = n == 1
                    ? $"there is exactly one object in the {side} image"
                    : $"there are exactly {Language.Number(n)} objects in the {side} image";
                return new(sentence, (l, r) => (left ? l : r).Objects.Count == n);
            }
            case Family.Exist:
            {
                var colour = Scene.Colours[rng.Next(Scene.Colours.Length)];
                var shape = Scene.Shapes[rng.Next(Scene.Shapes.Length)];
                bool left = rng.Next(2) == 0;
                return new($"there is {Language.Article($"{Language.Word(colour)} {Language.Word(shape)}")} in the {(left ? "left" : "right")} image",
                    (l, r) => (left ? l : r).Objects.Any(o => o.Colour == colour && o.Shape == shape));
            }
            case Family.Relation:
            {
                var upper = Scene.Shapes[rng.Next(Scene.Shapes.Length)];
                var lower = Scene.Shapes[rng.Next(Scene.Shapes.Length)];
                bool left = rng.Next(2) == 0;
                bool Holds(Scene s) => s.Objects.Any(a => a.Shape == upper &&
                    s.Objects.Any(b => !ReferenceEquals(a, b) && b.Shape == lower && a.Row < b.Row));
                return new($"the {(left ? "left" : "right")} image has a {Language.Word(upper)} above a {Language.Word(lower)}",
                    (l, r) => Holds(left ? l : r));
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(family));
        }
    }
}
