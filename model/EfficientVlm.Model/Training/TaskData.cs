using EfficientVlm.Model.Config;
using EfficientVlm.Model.Data.Pipeline;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Images;
using EfficientVlm.Model.Text;

namespace EfficientVlm.Model.Training;

/// <summary>
/// The records of a data folder in the generator's layout (annotations/, nlvr2/, images/,
/// vocab.txt), read on first use, optionally capped per split for short runs.
/// </summary>
public sealed class TaskData
{
    private readonly string _root;
    private readonly int? _trainLimit;
    private readonly int? _evalLimit;
    private readonly Dictionary<string, object> _cache = new();
    private readonly IReadOnlyList<string>? _answers;

    /// <param name="model">
    /// A checkpoint folder whose own vocabulary and answer list (<see cref="Checkpoints.ModelPackage"/>) take the place of the
    /// data folder's, so its word ids stay its own on any data folder, one with only a test split included.
    /// </param>
    public TaskData(string root, VlmConfig config, int? trainLimit = null, int? evalLimit = null, string? model = null)
    {
        _root = root;
        _trainLimit = trainLimit;
        _evalLimit = evalLimit;
        _answers = model is null ? null : Checkpoints.ModelPackage.Answers(model);
        var vocab = VocabularyPath = (model is null ? null : Checkpoints.ModelPackage.Vocabulary(model)) ?? Path.Combine(root, "vocab.txt");
        if (!File.Exists(vocab)) throw new FileNotFoundException($"{vocab} is missing: generate the data with `vlm data generate` (it writes the vocabulary), or use a model that carries its own.", vocab);
        Tokenizer = VlmTokenizer.FromVocabFile(vocab);
        if (Tokenizer.VocabSize > config.VocabSize)
            throw new ArgumentException($"The vocabulary has {Tokenizer.VocabSize} pieces; the model only {config.VocabSize}.");
        Collate = new Collate(new ImageLoader(), Tokenizer, config.ImageSize, config.MaxTextLength);
    }

    /// <summary>The vocabulary file the word ids come from: the model's own, else the data folder's.</summary>
    public string VocabularyPath { get; }

    public VlmTokenizer Tokenizer { get; }
    public Collate Collate { get; }

    public const string CaptionPrompt = "a picture of";

    private IReadOnlyList<T> Limit<T>(string split, IReadOnlyList<T> items)
    {
        int? limit = split == "train" ? _trainLimit : _evalLimit;
        return limit is int n && n < items.Count ? items.Take(n).ToList() : items;
    }

    private T Cached<T>(string key, Func<T> load) where T : class
    {
        lock (_cache)
        {
            if (!_cache.TryGetValue(key, out var value)) _cache[key] = value = load();
            return (T)value;
        }
    }

    public IReadOnlyList<CaptionImage> Captions(string split) => Cached($"captions/{split}", () =>
        Limit(split, DataFolder.Captions(_root, split)));

    public IReadOnlyList<VqaItem> Vqa(string split) => Cached($"vqa/{split}", () => Limit(split, ReadVqa(split)));

    /// <summary>Every question of a split, whatever the limits (the answer list is the whole train split's).</summary>
    private IReadOnlyList<VqaItem> ReadVqa(string split) => Cached($"vqa-all/{split}", () =>
        DataFolder.Vqa(_root, split));

    public IReadOnlyList<NlvrItem> Nlvr(string split) => Cached($"nlvr/{split}", () =>
        Limit(split, DataFolder.Nlvr(_root, split)));

    /// <summary>Object annotations of a split (COCO <c>annotations/instances_&lt;split&gt;.json</c>), for the grounding objectives.</summary>
    public InstanceSet Instances(string split) => Cached($"instances/{split}", () =>
    {
        var path = Path.Combine(_root, "annotations", $"instances_{split}.json");
        if (!File.Exists(path))
            throw new FileNotFoundException($"{path} is missing: the grounding objectives need object annotations (COCO instances); " +
                "data generated before 2026-12-07 lacks them, generate it again with `vlm data generate`.", path);
        return InstanceReaders.ReadCoco(path);
    });

    /// <summary>The closed answer list (the candidates VQA ranks): the model's own when it carries one, else every answer seen in train.</summary>
    public IReadOnlyList<string> AnswerList => _answers ?? Cached("answers", () =>
        (IReadOnlyList<string>)ReadVqa("train").SelectMany(q => q.Answers).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList());

    /// <summary>
    /// Writes these words beside a model trained on them, in <paramref name="folder"/>: the vocabulary and, for a VQA model,
    /// the answer list (<see cref="Checkpoints.ModelPackage.WriteWords"/>).
    /// </summary>
    public void WriteWords(string folder, VlmTask task) =>
        Checkpoints.ModelPackage.WriteWords(folder, VocabularyPath, task == VlmTask.Vqa ? AnswerList : null);

    /// <summary>(image, caption) pairs of an epoch: every image once, with one of its captions chosen by the epoch.</summary>
    public IReadOnlyList<(CaptionImage Image, string Caption)> CaptionPairs(string split, int seed, int epoch)
    {
        var rng = Data.ShapesWorld.Seeds.For(seed, "caption-choice", epoch);
        return Captions(split).Select(i => (i, i.Captions[rng.Next(i.Captions.Count)])).ToList();
    }
}
