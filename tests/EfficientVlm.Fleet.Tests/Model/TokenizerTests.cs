using EfficientVlm.Model.Text;

namespace EfficientVlm.Fleet.Tests.Model;

[Collection(TorchCollection.Name)]
public sealed class TokenizerTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("fleet-vocab-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static readonly string[] Captions =
    [
        "a large red circle, a small blue square and a small green triangle",
        "three shapes on a gray background",
        "a small blue square in the top left",
        "an orange circle",
        "two circles and one square",
    ];

    [Fact]
    public void A_vocabulary_built_from_captions_tokenises_them_and_decodes_back()
    {
        var vocab = VocabularyBuilder.Build(Captions);
        Assert.Equal(VocabularyBuilder.SpecialPieces, vocab.Take(5));
        var path = Path.Combine(_folder, "vocab.txt");
        VocabularyBuilder.Write(vocab, path);
        var tokenizer = VlmTokenizer.FromVocabFile(path);
        Assert.Equal((0L, 1L, 2L, 3L, 4L), (tokenizer.Special.Pad, tokenizer.Special.Unk, tokenizer.Special.Cls, tokenizer.Special.Sep, tokenizer.Special.Mask));

        var ids = tokenizer.Encode("A large red circle, a small blue square", 32);
        var expected = new[] { "[CLS]", "a", "large", "red", "circle", ",", "a", "small", "blue", "square", "[SEP]" }
            .Select(p => (long)vocab.ToList().IndexOf(p)).ToArray();
        Assert.Equal(expected, ids);
        Assert.Equal("a large red circle, a small blue square", tokenizer.Decode(ids));

        // A word not in the vocabulary falls back to characters, not [UNK], within the corpus alphabet.
        var unseen = tokenizer.Encode("recolor", 32);
        Assert.DoesNotContain(tokenizer.Special.Unk, unseen);
        Assert.Equal("recolor", tokenizer.Decode(unseen));
    }

    [Fact]
    public void A_bert_layout_vocabulary_works_unchanged()
    {
        // bert-base-uncased's layout: [PAD] at 0, [unused0..98], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, then pieces.
        // (The real file cannot be downloaded here; this has its layout and WordPiece conventions.)
        var lines = new List<string> { "[PAD]" };
        lines.AddRange(Enumerable.Range(0, 99).Select(i => $"[unused{i}]"));
        lines.AddRange(["[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "play", "##ing", "##ed", "shape", "##s", "?", "what", "color", "is"]);
        var path = Path.Combine(_folder, "bert-layout.txt");
        File.WriteAllLines(path, lines);
        var tokenizer = VlmTokenizer.FromVocabFile(path);
        Assert.Equal((0L, 100L, 101L, 102L, 103L), (tokenizer.Special.Pad, tokenizer.Special.Unk, tokenizer.Special.Cls, tokenizer.Special.Sep, tokenizer.Special.Mask));
        Assert.Equal([101L, 104, 105, 106, 108, 109, 102], tokenizer.Encode("The PLAYING shapes", 16));
        Assert.Equal([101L, 111, 112, 113, 104, 100, 110, 102], tokenizer.Encode("what color is the zebra?", 16));
    }

    [Fact]
    public void Empty_and_overlong_text_are_refused_or_truncated_as_asked()
    {
        var path = Path.Combine(_folder, "vocab.txt");
        VocabularyBuilder.Write(VocabularyBuilder.Build(Captions), path);
        var tokenizer = VlmTokenizer.FromVocabFile(path);
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => tokenizer.Encode("   ", 16)).Message);
        var text = string.Join(' ', Enumerable.Repeat("circle", 40));
        Assert.Contains("limit is 16", Assert.Throws<ArgumentException>(() => tokenizer.Encode(text, 16, truncate: false)).Message);
        var truncated = tokenizer.Encode(text, 16);
        Assert.Equal(16, truncated.Length);
        Assert.Equal(tokenizer.Special.Sep, truncated[^1]);

        var bad = Path.Combine(_folder, "bad.txt");
        File.WriteAllLines(bad, ["hello", "world"]);
        Assert.Contains("[PAD]", Assert.Throws<InvalidDataException>(() => VlmTokenizer.FromVocabFile(bad)).Message);
    }
}
