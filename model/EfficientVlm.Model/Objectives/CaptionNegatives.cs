using EfficientVlm.Model.Data.ShapesWorld;

namespace EfficientVlm.Model.Objectives;

/// <summary>
/// Hard negative captions made by editing a caption within closed word classes (colours, shapes, sizes, places,
/// relations, numbers): two different words of one class change places ("a red circle and a blue square" ->
/// "a blue circle and a red square": the same words, bound to other objects), or one word becomes another of its
/// class. A contrastive model that pools an image and a caption into one vector each tells such captions apart
/// badly (docs/training.md, retrieval); training on them teaches which attribute goes with which object.
/// An edit that only reorders the caption's parts (its comma- and "and"-separated phrases) is not a negative and
/// is not returned.
/// </summary>
public sealed class CaptionNegatives
{
    private readonly string[][] _classes;
    private readonly Dictionary<string, int> _classOf = new(StringComparer.Ordinal);

    /// <param name="classes">Word classes; a word belongs to one class at most.</param>
    public CaptionNegatives(IEnumerable<IEnumerable<string>> classes)
    {
        _classes = classes.Select(c => c.Distinct(StringComparer.Ordinal).ToArray()).Where(c => c.Length >= 2).ToArray();
        for (int k = 0; k < _classes.Length; k++)
            foreach (var word in _classes[k])
                if (!_classOf.TryAdd(word, k)) throw new ArgumentException($"'{word}' is in two word classes.");
    }

    /// <summary>The closed classes of ShapesWorld's language (shapesworld.md "Language rules").</summary>
    public static CaptionNegatives ShapesWorld { get; } = new([
        Scene.Colours.Select(Language.Word),
        Scene.Shapes.Select(Language.Word),
        Scene.Shapes.Select(Language.Plural),
        Enum.GetValues<ObjectSize>().Select(Language.Word),
        Language.RowNames,
        ["left", "right"],
        ["above", "below"],
        ["one", "two", "three", "four"],
    ]);

    /// <summary>
    /// An edited copy of <paramref name="caption"/> that differs in meaning, or null when it has no word of any class.
    /// A swap is tried first (when the caption has two different words of one class), else a replacement.
    /// </summary>
    public string? Edit(string caption, Random rng)
    {
        var words = caption.Split(' ');
        var slots = Enumerable.Range(0, words.Length).Where(i => _classOf.ContainsKey(Bare(words[i]))).ToArray();
        if (slots.Length == 0) return null;
        var original = Parts(caption);
        for (int attempt = 0; attempt < 8; attempt++)
        {
            var edited = (string[])words.Clone();
            int i = slots[rng.Next(slots.Length)];
            int k = _classOf[Bare(words[i])];
            var partners = slots.Where(j => _classOf[Bare(words[j])] == k && Bare(words[j]) != Bare(words[i])).ToArray();
            if (partners.Length > 0 && rng.Next(2) == 0)
            {
                int j = partners[rng.Next(partners.Length)];
                (edited[i], edited[j]) = (Replace(words[i], Bare(words[j])), Replace(words[j], Bare(words[i])));
            }
            else
            {
                var others = _classes[k].Where(w => w != Bare(words[i])).ToArray();
                edited[i] = Replace(words[i], others[rng.Next(others.Length)]);
            }
            FixArticles(edited);
            var text = string.Join(' ', edited);
            if (!Parts(text).SequenceEqual(original)) return text;
        }
        return null;
    }

    // a word without the comma that may follow it
    private static string Bare(string word) => word.TrimEnd(',');

    private static string Replace(string word, string with) => word.EndsWith(',') ? with + "," : with;

    // "a"/"an" agree with the word after them again
    private static void FixArticles(string[] words)
    {
        for (int i = 0; i + 1 < words.Length; i++)
            if (words[i] is "a" or "an")
                words[i] = Language.ArticleFor(words[i + 1]);
    }

    // the caption's phrases, sorted: captions that list the same phrases in another order mean the same
    private static string[] Parts(string caption) =>
        caption.Replace(" and ", ", ", StringComparison.Ordinal).Split(", ").Order(StringComparer.Ordinal).ToArray();
}
