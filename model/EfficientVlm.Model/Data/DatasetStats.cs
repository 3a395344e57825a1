using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Metrics;

namespace EfficientVlm.Model.Data;

/// <summary>Counts per split.</summary>
public sealed record SplitCounts(string Split, int Images, int Captions, int Questions, int Pairs, int TruePairs);

/// <summary>
/// The trivial baselines every later result must beat (computed on test, fitted on train), and the ceiling that
/// repeated captions put on text-to-image retrieval.
/// </summary>
public sealed record Baselines(
    double VqaMajorityPerQuestionType,
    double VqaMajorityOverall,
    double NlvrMajority,
    RetrievalRecall RandomRetrieval,
    ImageRecallCeiling ImageRetrievalCeiling,
    string MostFrequentCaption,
    double MostFrequentCaptionBleu4,
    double MostFrequentCaptionCiderD);

/// <summary>Per-split counts, answer distribution and trivial baselines of a data folder in the generator's layout.</summary>
public sealed record DatasetStats(IReadOnlyList<SplitCounts> Splits, IReadOnlyList<(string Answer, int Count)> TrainAnswers,
    IReadOnlyDictionary<string, int> TrainQuestionTypes, Baselines Baselines)
{
    public static readonly string[] SplitNames = ["train", "val", "test"];

    public static DatasetStats Compute(string root)
    {
        var captions = new Dictionary<string, IReadOnlyList<CaptionImage>>();
        var vqa = new Dictionary<string, IReadOnlyList<VqaItem>>();
        var nlvr = new Dictionary<string, IReadOnlyList<NlvrItem>>();
        var counts = new List<SplitCounts>();
        foreach (var split in SplitNames)
        {
            captions[split] = DataFolder.Captions(root, split, requireImages: false);
            vqa[split] = DataFolder.Vqa(root, split, requireImages: false);
            nlvr[split] = DataFolder.Nlvr(root, split, requireImages: false);
            counts.Add(new SplitCounts(split, captions[split].Count, captions[split].Sum(c => c.Captions.Count), vqa[split].Count,
                nlvr[split].Count, nlvr[split].Count(p => p.Label)));
        }

        var train = vqa["train"];
        var answers = train.GroupBy(q => q.MultipleChoiceAnswer ?? q.Answers[0]).Select(g => (g.Key, g.Count()))
            .OrderByDescending(a => a.Item2).ThenBy(a => a.Key, StringComparer.Ordinal).ToList();
        var types = train.GroupBy(q => q.QuestionType ?? "?").ToDictionary(g => g.Key, g => g.Count());
        var majorityByType = train.GroupBy(q => q.QuestionType ?? "?").ToDictionary(g => g.Key,
            g => g.GroupBy(q => q.MultipleChoiceAnswer ?? q.Answers[0]).OrderByDescending(a => a.Count()).ThenBy(a => a.Key, StringComparer.Ordinal).First().Key);
        var overall = answers[0].Key;
        var test = vqa["test"];
        double perType = VqaAccuracy.Mean(test.Select(q => (majorityByType.GetValueOrDefault(q.QuestionType ?? "?", overall), q.Answers)));
        double overallAcc = VqaAccuracy.Mean(test.Select(q => (overall, q.Answers)));

        bool majorityLabel = nlvr["train"].Count(p => p.Label) * 2 >= nlvr["train"].Count;
        double nlvrAcc = nlvr["test"].Count == 0 ? 0 : nlvr["test"].Count(p => p.Label == majorityLabel) / (double)nlvr["test"].Count;

        var testImages = captions["test"];
        var owner = testImages.SelectMany((image, i) => image.Captions.Select(_ => i)).ToList();
        var random = RetrievalMetrics.RandomBaseline(owner, testImages.Count);
        var ceiling = RetrievalMetrics.IdenticalTextCeiling(testImages.SelectMany(i => i.Captions).ToList(), owner, testImages.Count);

        var frequent = captions["train"].SelectMany(c => c.Captions).GroupBy(c => c, StringComparer.Ordinal)
            .OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal).First().Key;
        var samples = testImages.Select(i => new CaptionSample(CaptionMetrics.Tokenize(frequent),
            i.Captions.Select(CaptionMetrics.Tokenize).ToList())).ToList();
        var bleu = CaptionMetrics.Bleu(samples);
        var cider = CaptionMetrics.CiderD(samples);
        return new DatasetStats(counts, answers, types,
            new Baselines(perType, overallAcc, nlvrAcc, random, ceiling, frequent, bleu.Bleu4, cider.Score));
    }
}
