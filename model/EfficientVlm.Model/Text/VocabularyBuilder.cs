using System.Text;

namespace EfficientVlm.Model.Text;

/// <summary>
/// Builds a BERT-style <c>vocab.txt</c> from a caption corpus: the five special pieces first, then
/// every character seen (alone and as a <c>##</c> continuation, so any text in the corpus's alphabet
/// tokenises without [UNK]), then whole words by frequency, up to <c>maxSize</c> lines.
/// Words are split as BERT-uncased's basic tokeniser does: lower case, whitespace, punctuation alone.
/// </summary>
public static class VocabularyBuilder
{
    public static readonly string[] SpecialPieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

    public static IReadOnlyList<string> Build(IEnumerable<string> corpus, int maxSize = 30522, int minCount = 1)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        var characters = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var text in corpus)
        foreach (var word in BasicTokens(text))
        {
            counts[word] = counts.GetValueOrDefault(word) + 1;
            foreach (var rune in word.EnumerateRunes()) characters.Add(rune.ToString());
        }

        var vocab = new List<string>(SpecialPieces);
        var seen = new HashSet<string>(vocab, StringComparer.Ordinal);
        void Add(string piece)
        {
            if (vocab.Count < maxSize && seen.Add(piece)) vocab.Add(piece);
        }
        foreach (var c in characters) Add(c);
        foreach (var c in characters) Add("##" + c);
        foreach (var (word, _) in counts.Where(kv => kv.Value >= minCount)
                     .OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal))
            Add(word);
        return vocab;
    }

    public static void Write(IReadOnlyList<string> vocab, string path)
    {
        var temp = path + ".tmp";
        File.WriteAllText(temp, string.Join('\n', vocab) + "\n", new UTF8Encoding(false));
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>Lower-cased words and single punctuation marks.</summary>
    public static IEnumerable<string> BasicTokens(string text)
    {
        var word = new StringBuilder();
        foreach (var ch in text.ToLowerInvariant())
        {
            if (char.IsWhiteSpace(ch) || char.IsControl(ch))
            {
                if (word.Length > 0) { yield return word.ToString(); word.Clear(); }
            }
            else if (char.IsPunctuation(ch) || char.IsSymbol(ch))
            {
                if (word.Length > 0) { yield return word.ToString(); word.Clear(); }
                yield return ch.ToString();
            }
            else
            {
                word.Append(ch);
            }
        }
        if (word.Length > 0) yield return word.ToString();
    }
}
