using EfficientVlm.Model.Data.Readers;

namespace EfficientVlm.Model.Metrics;

/// <summary>The accuracy (0-100) of the items of one form: a VQA question type or an NLVR2 statement family.</summary>
public interface IFormScore
{
    string Form { get; }
    int Count { get; }
    double Accuracy { get; }
}

/// <summary>
/// VQA accuracy (0-100) of the questions of one type, with how many distinct answers the model gave
/// and how many the questions expect: a model answering four of nine cells shows it here.
/// </summary>
public sealed record VqaFormScore(string Form, int Count, double Accuracy, int AnswersGiven, int AnswersExpected) : IFormScore;

/// <summary>NLVR2 accuracy (0-100) of the statements of one family, with the share (0-100) the model held true and the share that are.</summary>
public sealed record NlvrFormScore(string Form, int Count, double Accuracy, double HeldTrue, double AreTrue) : IFormScore;

/// <summary>Task scores split by the form of the question or statement (<c>vlm eval --by-form</c>).</summary>
public static class Breakdown
{
    /// <summary>Placeholder for questions without a VQAv2 question_type.</summary>
    public const string NoType = "(no type)";

    /// <summary>VQA accuracy per VQAv2 question_type, sorted by type.</summary>
    public static IReadOnlyList<VqaFormScore> Vqa(IReadOnlyList<VqaItem> items, IReadOnlyList<string> answers)
    {
        CheckCounts(items.Count, answers.Count);
        return items.Zip(answers)
            .GroupBy(x => x.First.QuestionType ?? NoType)
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => new VqaFormScore(g.Key, g.Count(),
                100 * VqaAccuracy.Mean(g.Select(x => (x.Second, x.First.Answers))),
                g.Select(x => VqaAccuracy.Normalize(x.Second)).Distinct().Count(),
                g.Select(x => Expected(x.First)).OfType<string>().Distinct().Count()))
            .ToList();
    }

    /// <summary>NLVR2 accuracy per statement family, as <paramref name="form"/> names it, sorted by name.</summary>
    public static IReadOnlyList<NlvrFormScore> Nlvr(IReadOnlyList<NlvrItem> items, IReadOnlyList<bool> heldTrue, Func<string, string> form)
    {
        CheckCounts(items.Count, heldTrue.Count);
        return items.Zip(heldTrue)
            .GroupBy(x => form(x.First.Sentence))
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => new NlvrFormScore(g.Key, g.Count(),
                100 * ClassificationAccuracy.Accuracy(g.Select(x => x.Second).ToList(), g.Select(x => x.First.Label).ToList()),
                100.0 * g.Count(x => x.Second) / g.Count(),
                100.0 * g.Count(x => x.First.Label) / g.Count()))
            .ToList();
    }

    /// <summary>The answer a question expects: VQAv2's multiple_choice_answer, else the most frequent annotator answer.</summary>
    private static string? Expected(VqaItem item) =>
        item.MultipleChoiceAnswer is { } answer ? VqaAccuracy.Normalize(answer)
        : item.Answers.Count == 0 ? null
        : item.Answers.Select(VqaAccuracy.Normalize).GroupBy(a => a).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal).First().Key;

    private static void CheckCounts(int items, int predictions)
    {
        if (items != predictions) throw new ArgumentException($"There are {items} records but {predictions} predictions.");
    }
}
