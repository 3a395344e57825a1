namespace EfficientVlm.Model.Data.ShapesWorld;

/// <summary>One VQA question with its answer and the VQAv2 type fields.</summary>
public sealed record GeneratedQuestion(string Question, string Answer, string QuestionType, string AnswerType);

/// <summary>VQA questions per shapesworld.md: six categories, shortest unique target descriptions.</summary>
public static class Questions
{
    public enum Category { Colour, Shape, Size, Place, Count, Exist }

    private static readonly Category[] Categories = Enum.GetValues<Category>();

    /// <summary>
    /// <paramref name="count"/> questions: category uniform, redrawn when the scene allows no question
    /// of it; a question text already asked of this image is redrawn too (bounded tries).
    /// </summary>
    public static List<GeneratedQuestion> Generate(Scene scene, Random rng, int count)
    {
        var result = new List<GeneratedQuestion>();
        for (int attempt = 0; result.Count < count && attempt < 200; attempt++)
        {
            var q = TryCategory(Categories[rng.Next(Categories.Length)], scene, rng);
            if (q is not null && result.All(r => r.Question != q.Question)) result.Add(q);
        }
        return result;
    }

    private static GeneratedQuestion? TryCategory(Category category, Scene scene, Random rng)
    {
        var objects = scene.Objects;
        switch (category)
        {
            case Category.Colour:
            {
                var (target, desc) = PickTarget(scene, rng, o => Language.Word(o.Shape), o => $"{Language.Word(o.Size)} {Language.Word(o.Shape)}");
                return target is null ? null
                    : new($"what color is the {desc}?", Language.Word(target.Colour), "what color is the", "other");
            }
            case Category.Shape:
            {
                var (target, desc) = PickTarget(scene, rng, o => Language.Word(o.Colour), o => $"{Language.Word(o.Size)} {Language.Word(o.Colour)}");
                return target is null ? null
                    : new($"what shape is the {desc} object?", Language.Word(target.Shape), "what shape is the", "other");
            }
            case Category.Size:
            {
                var (target, desc) = PickTarget(scene, rng, o => $"{Language.Word(o.Colour)} {Language.Word(o.Shape)}");
                return target is null ? null
                    : new($"what size is the {desc}?", Language.Word(target.Size), "what size is the", "other");
            }
            case Category.Place:
            {
                var (target, desc) = PickTarget(scene, rng, o => $"{Language.Word(o.Colour)} {Language.Word(o.Shape)}", Language.Describe);
                return target is null ? null
                    : new($"where is the {desc}?", Language.CellName(target.Row, target.Column), "where is the", "other");
            }
            case Category.Count:
            {
                bool present = rng.Next(2) == 0;
                if (rng.Next(2) == 0)
                {
                    var shape = present ? objects[rng.Next(objects.Count)].Shape : Scene.Shapes[rng.Next(Scene.Shapes.Length)];
                    return new($"how many {Language.Plural(shape)} are there?", objects.Count(o => o.Shape == shape).ToString(), "how many", "number");
                }
                var colour = present ? objects[rng.Next(objects.Count)].Colour : Scene.Colours[rng.Next(Scene.Colours.Length)];
                return new($"how many {Language.Word(colour)} objects are there?", objects.Count(o => o.Colour == colour).ToString(), "how many", "number");
            }
            case Category.Exist:
            {
                bool yes = rng.Next(2) == 0;
                (Colour, Shape) pair;
                if (yes)
                {
                    var o = objects[rng.Next(objects.Count)];
                    pair = (o.Colour, o.Shape);
                }
                else
                {
                    var absent = (from c in Scene.Colours from s in Scene.Shapes
                                  where !objects.Any(o => o.Colour == c && o.Shape == s) select (c, s)).ToList();
                    pair = absent[rng.Next(absent.Count)];
                }
                return new($"is there {Language.Article($"{Language.Word(pair.Item1)} {Language.Word(pair.Item2)}")}?",
                    yes ? "yes" : "no", "is there a", "yes/no");
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(category));
        }
    }

    /// <summary>
    /// A random target among the objects that some description (tried in order, shortest first)
    /// names uniquely; returns it with that description, or (null, "") when no object qualifies.
    /// </summary>
    private static (SceneObject? Target, string Description) PickTarget(Scene scene, Random rng, params Func<SceneObject, string>[] descriptions)
    {
        var candidates = new List<(SceneObject, string)>();
        foreach (var o in scene.Objects)
        {
            foreach (var describe in descriptions)
            {
                var d = describe(o);
                if (scene.Objects.Count(other => describe(other) == d) == 1)
                {
                    candidates.Add((o, d));
                    break;
                }
            }
        }
        return candidates.Count == 0 ? (null, "") : candidates[rng.Next(candidates.Count)];
    }
}
