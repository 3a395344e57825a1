using EfficientVlm.Model.Objectives;
using Microsoft.ML.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Text;

/// <summary>
/// WordPiece tokenisation with a standard BERT <c>vocab.txt</c> (one piece per line, the line number
/// is the id; lower-casing and punctuation splitting as BERT-uncased does). Works unchanged with
/// bert-base-uncased's vocabulary and with the vocabularies <see cref="VocabularyBuilder"/> writes.
/// </summary>
public sealed class VlmTokenizer
{
    private readonly BertTokenizer _bert;

    private VlmTokenizer(BertTokenizer bert, int vocabSize)
    {
        _bert = bert;
        VocabSize = vocabSize;
        Special = new SpecialTokens(bert.PaddingTokenId, bert.UnknownTokenId, bert.ClassificationTokenId,
            bert.SeparatorTokenId, bert.MaskingTokenId, vocabSize);
    }

    public int VocabSize { get; }

    public SpecialTokens Special { get; }

    /// <exception cref="InvalidDataException">The file lacks one of [PAD] [UNK] [CLS] [SEP] [MASK].</exception>
    public static VlmTokenizer FromVocabFile(string path)
    {
        var lines = File.ReadAllLines(path);
        foreach (var special in new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" })
            if (!lines.Contains(special))
                throw new InvalidDataException($"{path} is not a BERT vocabulary: it has no {special} line.");
        using var stream = File.OpenRead(path);
        return new VlmTokenizer(BertTokenizer.Create(stream, new BertOptions { LowerCaseBeforeTokenization = true }), lines.Length);
    }

    /// <summary>[CLS] pieces [SEP], at most <paramref name="maxLength"/> ids.</summary>
    /// <exception cref="ArgumentException">Empty text; or longer than maxLength when <paramref name="truncate"/> is false.</exception>
    public long[] Encode(string text, int maxLength, bool truncate = true)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new ArgumentException("The text is empty.");
        if (maxLength < 3) throw new ArgumentException("maxLength must leave room for [CLS], one piece and [SEP].");
        var ids = _bert.EncodeToIds(text, addSpecialTokens: true, considerPreTokenization: true, considerNormalization: true);
        if (ids.Count > maxLength)
        {
            if (!truncate)
                throw new ArgumentException($"The text is {ids.Count} word pieces long; the limit is {maxLength}.");
            return [.. ids.Take(maxLength - 1).Select(i => (long)i), Special.Sep];
        }
        return ids.Select(i => (long)i).ToArray();
    }

    /// <summary>The pieces without [CLS]/[SEP] (for prompts and answers).</summary>
    public long[] EncodeWithoutSpecials(string text) =>
        _bert.EncodeToIds(text, addSpecialTokens: false, considerPreTokenization: true, considerNormalization: true)
            .Select(i => (long)i).ToArray();

    /// <summary>Texts -> ids [B, T] and padding [B, T] (1 token, 0 pad), T = the longest.</summary>
    public (Tensor Ids, Tensor Padding) EncodeBatch(IReadOnlyList<string> texts, int maxLength, bool truncate = true) =>
        Pad(texts.Select(t => Encode(t, maxLength, truncate)).ToList(), Special.Pad);

    /// <summary>Right-pads id rows into [B, T] ids and a [B, T] padding mask.</summary>
    public static (Tensor Ids, Tensor Padding) Pad(IReadOnlyList<long[]> rows, long pad)
    {
        int t = rows.Max(r => r.Length);
        var ids = new long[rows.Count * t];
        var padding = new long[rows.Count * t];
        for (int i = 0; i < rows.Count; i++)
        for (int j = 0; j < t; j++)
        {
            bool token = j < rows[i].Length;
            ids[i * t + j] = token ? rows[i][j] : pad;
            padding[i * t + j] = token ? 1 : 0;
        }
        return (torch.tensor(ids).view(rows.Count, t), torch.tensor(padding).view(rows.Count, t));
    }

    /// <summary>Ids back to text (special pieces dropped, ## pieces joined).</summary>
    public string Decode(IEnumerable<long> ids) =>
        _bert.Decode(ids.Select(i => (int)i), skipSpecialTokens: true) ?? "";
}
