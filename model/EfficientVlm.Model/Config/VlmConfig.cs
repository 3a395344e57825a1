using System.Text.Json;
using System.Text.Json.Serialization;

namespace EfficientVlm.Model.Config;

/// <summary>The shape of one transformer layer after pruning: heads kept and FFN width.</summary>
/// <param name="Heads">Self-attention heads kept (0: the sub-block is an identity).</param>
/// <param name="CrossHeads">Cross-attention heads kept (fusion and decoder layers; 0 elsewhere).</param>
/// <param name="FfnWidth">FFN intermediate neurons kept (0: the sub-block is an identity).</param>
public sealed record LayerShape(int Heads, int CrossHeads, int FfnWidth);

/// <summary>
/// The architecture of a vision-language model (method.md section 2), immutable and validated on
/// construction. All encoders share the hidden width D. A pruned model carries its per-layer
/// shapes in <see cref="Pruned"/>, so a shrunk checkpoint reloads without the masks.
/// </summary>
public sealed record VlmConfig
{
    /// <summary>Preset or model name, for people.</summary>
    public string Name { get; init; } = "custom";

    /// <summary>D: hidden width of every encoder.</summary>
    public int Hidden { get; init; } = 768;

    /// <summary>Attention heads per layer before pruning; head size hs = D / heads.</summary>
    public int Heads { get; init; } = 12;

    /// <summary>F: FFN intermediate width before pruning.</summary>
    public int Intermediate { get; init; } = 3072;

    public int VisionLayers { get; init; } = 12;
    public int TextLayers { get; init; } = 6;
    public int FusionLayers { get; init; } = 6;

    /// <summary>Layers of the VQA answer decoder (initialised from the fusion layers).</summary>
    public int DecoderLayers { get; init; } = 6;

    /// <summary>Square input images: side in pixels.</summary>
    public int ImageSize { get; init; } = 224;

    /// <summary>Patch side in pixels; ImageSize must be a multiple.</summary>
    public int PatchSize { get; init; } = 16;

    /// <summary>V: word-piece vocabulary size.</summary>
    public int VocabSize { get; init; } = 30522;

    /// <summary>Most text positions (learned position embeddings).</summary>
    public int MaxTextLength { get; init; } = 512;

    /// <summary>ITC projection width.</summary>
    public int EmbedDim { get; init; } = 256;

    public double Dropout { get; init; } = 0.1;

    /// <summary>
    /// Standard deviation of the vision encoder's learned positional embedding when it is created;
    /// null: CLIP's D^-0.5. Only the start: a trained checkpoint carries its positions, and this
    /// records which start they came from (docs/training.md, "Position").
    /// </summary>
    public double? PositionInit { get; init; }

    /// <summary>
    /// How pixels become patch tokens: <see cref="VisionStem.Patch"/>, CLIP's one linear PxP stride-P projection
    /// (the paper presets), or <see cref="VisionStem.Conv"/>, a small convolutional stem (3x3 convolutions down to
    /// the patch grid) that sees shapes which straddle patch borders (the CPU presets; docs/training.md).
    /// </summary>
    public VisionStem Stem { get; init; } = VisionStem.Patch;

    /// <summary>
    /// How the vision positions start: <see cref="VisionPositions.Random"/> (Gaussian, <see cref="PositionInit"/>) or
    /// <see cref="VisionPositions.SinCos"/> (2-D sine-cosine of the patch row and column, at the scale of the
    /// content; still learnt). Only the start, as <see cref="PositionInit"/>.
    /// </summary>
    public VisionPositions Positions { get; init; } = VisionPositions.Random;

    /// <summary>
    /// Which heads the model carries. Pre-training and retrieval use the shared ITC/ITM/MLM heads;
    /// captioning reuses text + fusion as a causal decoder with the MLM head as its LM head; VQA adds
    /// the answer decoder (<see cref="DecoderLayers"/>); NLVR2 doubles the fusion layers and adds a
    /// 2-way classifier.
    /// </summary>
    public VlmTask Task { get; init; } = VlmTask.Pretrain;

    /// <summary>Per-stack layer shapes after pruning; null for an unpruned model.</summary>
    public PrunedShape? Pruned { get; init; }

    [JsonIgnore] public int HeadSize => Hidden / Heads;

    /// <summary>
    /// Widths of the conv stem's convolutions before the last (which gives <see cref="Hidden"/>): the pruned ones when the
    /// stem's channels were pruned, else <see cref="DefaultStemWidths"/>. Only meaningful for <see cref="VisionStem.Conv"/>.
    /// </summary>
    [JsonIgnore] public IReadOnlyList<int> StemWidths => Pruned?.StemWidths ?? DefaultStemWidths(Hidden, PatchSize);

    /// <summary>The conv stem's inner widths: 16, doubling per halving of the resolution, at most <paramref name="hidden"/>; one per halving of <paramref name="patch"/>.</summary>
    public static IReadOnlyList<int> DefaultStemWidths(int hidden, int patch) =>
        Enumerable.Range(0, (int)Math.Round(Math.Log2(patch))).Select(i => Math.Min(hidden, 16 << i)).ToArray();

    /// <summary>Image tokens N = (ImageSize / PatchSize)^2 + 1 (class token).</summary>
    [JsonIgnore] public int ImageTokens => (ImageSize / PatchSize) * (ImageSize / PatchSize) + 1;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first inconsistent field.</summary>
    public VlmConfig Validated()
    {
        Require(Hidden > 0, "Hidden must be positive");
        Require(Heads > 0 && Hidden % Heads == 0, $"Hidden ({Hidden}) must be divisible by Heads ({Heads})");
        Require(Intermediate > 0, "Intermediate must be positive");
        Require(VisionLayers >= 0 && TextLayers >= 0 && FusionLayers >= 0 && DecoderLayers >= 0, "layer counts must be 0 or more");
        Require(PatchSize > 0 && ImageSize > 0 && ImageSize % PatchSize == 0,
            $"ImageSize ({ImageSize}) must be a positive multiple of PatchSize ({PatchSize})");
        Require(VocabSize > 4, "VocabSize must be larger than the special tokens");
        Require(MaxTextLength >= 2, "MaxTextLength must be at least 2");
        Require(EmbedDim > 0, "EmbedDim must be positive");
        Require(Dropout is >= 0 and < 1, "Dropout must be in [0, 1)");
        Require(PositionInit is null or (> 0 and <= 10), "PositionInit must be in (0, 10] when given");
        Require(Positions != VisionPositions.SinCos || Hidden % 4 == 0, $"SinCos positions need Hidden ({Hidden}) divisible by 4");
        Require(Stem != VisionStem.Conv || PatchSize is 4 or 8 or 16, $"the conv stem reaches patch sizes 4, 8 or 16, not {PatchSize}");
        Pruned?.Validate(this);
        return this;
    }

    /// <summary>The shape of layer <paramref name="index"/> of <paramref name="stack"/>, pruned or not.</summary>
    public LayerShape Shape(Stack stack, int index)
    {
        var pruned = Pruned?.For(stack);
        if (pruned != null) return pruned[index];
        bool cross = stack is Stack.Fusion or Stack.Decoder;
        return new LayerShape(Heads, cross ? Heads : 0, Intermediate);
    }

    /// <summary>Layers the built model has in <paramref name="stack"/> (NLVR2 doubles fusion; only VQA has a decoder).</summary>
    public int Layers(Stack stack) => stack switch
    {
        Stack.Vision => VisionLayers,
        Stack.Text => TextLayers,
        Stack.Fusion => Task == VlmTask.Nlvr2 ? 2 * FusionLayers : FusionLayers,
        Stack.Decoder => Task == VlmTask.Vqa ? DecoderLayers : 0,
        _ => throw new ArgumentOutOfRangeException(nameof(stack)),
    };

    private static void Require(bool condition, string message)
    {
        if (!condition) throw new ArgumentException($"Invalid model config: {message}.");
    }

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Parses and validates; a malformed document is an <see cref="ArgumentException"/>.</summary>
    public static VlmConfig FromJson(string json)
    {
        try
        {
            return (JsonSerializer.Deserialize<VlmConfig>(json, Json) ?? throw new ArgumentException("Model config JSON is null."))
                .Validated();
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"Model config JSON is malformed: {e.Message}", e);
        }
    }
}

/// <summary>The task a model is built for (decides its heads; see <see cref="VlmConfig.Task"/>).</summary>
public enum VlmTask
{
    Pretrain,
    Vqa,
    Nlvr2,
    Retrieval,
    Captioning,
}

/// <summary>How the vision encoder turns pixels into patch tokens (<see cref="VlmConfig.Stem"/>).</summary>
public enum VisionStem
{
    Patch,
    Conv,
}

/// <summary>How the vision positions are started (<see cref="VlmConfig.Positions"/>).</summary>
public enum VisionPositions
{
    Random,
    SinCos,
}

/// <summary>The transformer stacks of the model.</summary>
public enum Stack
{
    Vision,
    Text,
    Fusion,
    Decoder,
}

/// <summary>Per-layer shapes of each stack after pruning (null: that stack is not pruned).</summary>
public sealed record PrunedShape
{
    public IReadOnlyList<LayerShape>? Vision { get; init; }
    public IReadOnlyList<LayerShape>? Text { get; init; }
    public IReadOnlyList<LayerShape>? Fusion { get; init; }
    public IReadOnlyList<LayerShape>? Decoder { get; init; }
    /// <summary>
    /// The conv stem's inner widths after its channels were pruned (one per convolution before the last; the last still
    /// gives the hidden size); null: the stem is whole.
    /// </summary>
    public IReadOnlyList<int>? StemWidths { get; init; }

    public IReadOnlyList<LayerShape>? For(Stack stack) => stack switch
    {
        Stack.Vision => Vision,
        Stack.Text => Text,
        Stack.Fusion => Fusion,
        Stack.Decoder => Decoder,
        _ => throw new ArgumentOutOfRangeException(nameof(stack)),
    };

    /// <summary>Structural equality: two pruned shapes are equal when every layer shape and the stem's widths are.</summary>
    public bool Equals(PrunedShape? other) =>
        other is not null && Enum.GetValues<Stack>().All(s => Same(For(s), other.For(s)))
        && (StemWidths is null ? other.StemWidths is null : other.StemWidths is not null && StemWidths.SequenceEqual(other.StemWidths));

    public override int GetHashCode() =>
        Enum.GetValues<Stack>().Aggregate(StemWidths?.Aggregate(31, HashCode.Combine) ?? 0,
            (h, s) => HashCode.Combine(h, For(s)?.Aggregate(17, HashCode.Combine) ?? 0));

    private static bool Same(IReadOnlyList<LayerShape>? a, IReadOnlyList<LayerShape>? b) =>
        a is null ? b is null : b is not null && a.SequenceEqual(b);

    internal void Validate(VlmConfig config)
    {
        if (StemWidths is { } stem)
        {
            if (config.Stem != VisionStem.Conv)
                throw new ArgumentException("Invalid model config: pruned stem widths need the conv stem.");
            var full = VlmConfig.DefaultStemWidths(config.Hidden, config.PatchSize);
            if (stem.Count != full.Count || stem.Where((w, i) => w < 1 || w > full[i]).Any())
                throw new ArgumentException($"Invalid model config: pruned stem widths [{string.Join(", ", stem)}] must be {full.Count} widths, " +
                    $"each in 1..[{string.Join(", ", full)}].");
        }
        foreach (var stack in Enum.GetValues<Stack>())
        {
            var shapes = For(stack);
            if (shapes == null) continue;
            if (shapes.Count != config.Layers(stack))
                throw new ArgumentException($"Invalid model config: pruned {stack} has {shapes.Count} layers, the model {config.Layers(stack)}.");
            bool cross = stack is Stack.Fusion or Stack.Decoder;
            for (int i = 0; i < shapes.Count; i++)
            {
                var s = shapes[i];
                if (s.Heads < 0 || s.Heads > config.Heads || s.FfnWidth < 0 || s.FfnWidth > config.Intermediate
                    || s.CrossHeads < 0 || s.CrossHeads > (cross ? config.Heads : 0))
                    throw new ArgumentException($"Invalid model config: pruned {stack} layer {i} shape {s} is out of range.");
                if (stack == Stack.Fusion && config.Task == VlmTask.Nlvr2 && i % 2 == 1 && s.CrossHeads != shapes[i - 1].CrossHeads)
                    throw new ArgumentException($"Invalid model config: NLVR2 fusion layers {i - 1} and {i} share cross-attention key/value and must keep the same cross heads.");
            }
        }
    }
}
