using EfficientVlm.Model.Config;
using EfficientVlm.Model.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Modules;

/// <summary>BERT embeddings: word + position + token type, LayerNorm (eps 1e-12), dropout.</summary>
public sealed class TextEmbeddings : Module
{
    private readonly Embedding word_embeddings;
    private readonly Embedding position_embeddings;
    private readonly Embedding token_type_embeddings;
    private readonly LayerNorm layer_norm;
    private readonly double _dropout;

    public TextEmbeddings(string name, VlmConfig config, Device? device) : base(name)
    {
        word_embeddings = Embedding(config.VocabSize, config.Hidden, device: device);
        position_embeddings = Embedding(config.MaxTextLength, config.Hidden, device: device);
        token_type_embeddings = Embedding(2, config.Hidden, device: device);
        layer_norm = LayerNorm(config.Hidden, 1e-12, device: device);
        _dropout = config.Dropout;
        foreach (var e in new[] { word_embeddings, position_embeddings, token_type_embeddings })
            init.normal_(e.weight!, 0, 0.02);
        RegisterComponents();
    }

    /// <summary>The word embedding matrix [V, D] (tied to the MLM / LM decoder).</summary>
    public Parameter WordWeights => word_embeddings.weight!;

    /// <summary>ids [B, T] -> [B, T, D]</summary>
    public Tensor Forward(Tensor ids)
    {
        long t = ids.shape[1];
        if (t > position_embeddings.weight!.shape[0])
            throw new ArgumentException($"Text of {t} tokens is longer than the model's {position_embeddings.weight!.shape[0]} positions.");
        var positions = torch.arange(t, device: ids.device).unsqueeze(0);            // (1, T)
        var x = word_embeddings.forward(ids).add(position_embeddings.forward(positions), Scalars.One)
            .add(token_type_embeddings.forward(torch.zeros_like(ids)), Scalars.One);
        return functional.dropout(layer_norm.forward(x), _dropout, training);
    }
}

/// <summary>
/// A post-LN BERT layer: self-attention, then (fusion and decoder layers) cross-attention over
/// image tokens, then the FFN, each as LayerNorm(x + sublayer(x)).
/// </summary>
public sealed class BertLayer : Module
{
    private readonly Attention self_attn;
    private readonly LayerNorm self_ln;
    private readonly Attention? cross_attn;
    private readonly LayerNorm? cross_ln;
    private readonly FeedForward ffn;
    private readonly LayerNorm ffn_ln;
    private readonly double _dropout;

    public BertLayer(string name, VlmConfig config, LayerShape shape, bool hasCross, Device? device,
        BertLayer? shareCrossKeyValueWith = null) : base(name)
    {
        int d = config.Hidden;
        self_attn = new Attention("self_attn", d, d, shape.Heads, config.HeadSize, device);
        self_ln = LayerNorm(d, 1e-12, device: device);
        if (hasCross)
        {
            cross_attn = new Attention("cross_attn", d, d, shape.CrossHeads, config.HeadSize, device,
                shareCrossKeyValueWith?.cross_attn);
            cross_ln = LayerNorm(d, 1e-12, device: device);
        }
        ffn = new FeedForward("ffn", d, shape.FfnWidth, Activation.Gelu, device);
        ffn_ln = LayerNorm(d, 1e-12, device: device);
        _dropout = config.Dropout;
        RegisterComponents();
    }

    /// <summary>The cross-attention block (fusion and decoder layers), for weight sharing in NLVR2.</summary>
    public Attention? CrossAttention => cross_attn;

    /// <summary>
    /// x [B, T, D], selfMask additive [B, 1, T|1, T], image [B, N, D] with imageMask [B, 1, 1, N]
    /// (cross layers only) -> [B, T, D]
    /// </summary>
    public Tensor Forward(Tensor x, Tensor? selfMask, Tensor? image, Tensor? imageMask, LayerGates? gates,
        bool keepProbs, out Tensor? selfProbs, out Tensor? crossProbs)
    {
        selfProbs = crossProbs = null;
        if (self_attn.Heads > 0)
        {
            var a = self_attn.Forward(x, x, selfMask, gates?.Heads, keepProbs, out selfProbs);
            var y = self_ln.forward(x.add(functional.dropout(a, _dropout, training), Scalars.One));
            x = gates?.Heads is { } g ? GateMath.IdentityWhenClosed(g, y, x) : y;
        }
        if (cross_attn is not null && cross_attn.Heads > 0)
        {
            if (image is null) throw new ArgumentException("A fusion layer needs image tokens.");
            var a = cross_attn.Forward(x, image, imageMask, gates?.CrossHeads, keepProbs, out crossProbs);
            var y = cross_ln!.forward(x.add(functional.dropout(a, _dropout, training), Scalars.One));
            x = gates?.CrossHeads is { } g ? GateMath.IdentityWhenClosed(g, y, x) : y;
        }
        if (ffn.Width > 0)
        {
            var f = ffn.Forward(x, gates?.Ffn);
            var y = ffn_ln.forward(x.add(functional.dropout(f, _dropout, training), Scalars.One));
            x = gates?.Ffn is { } g ? GateMath.IdentityWhenClosed(g, y, x) : y;
        }
        return x;
    }
}

/// <summary>
/// A stack of BERT layers (text: self-attention only; fusion and decoder: with cross-attention).
/// For NLVR2 the fusion stack is doubled: layer 2j attends to image 0, layer 2j+1 to image 1, and
/// the two share their cross-attention key/value projections.
/// </summary>
public sealed class BertStack : Module
{
    private readonly ModuleList<BertLayer> layers;

    public BertStack(string name, VlmConfig config, Stack stack, Device? device) : base(name)
    {
        bool cross = stack is Stack.Fusion or Stack.Decoder;
        bool pairs = stack == Stack.Fusion && config.Task == VlmTask.Nlvr2;
        var built = new List<BertLayer>();
        for (int i = 0; i < config.Layers(stack); i++)
        {
            var shareWith = pairs && i % 2 == 1 ? built[i - 1] : null;
            built.Add(new BertLayer($"{i}", config, config.Shape(stack, i), cross, device, shareWith));
        }
        layers = new ModuleList<BertLayer>(built.ToArray());
        RegisterComponents();
    }

    public int Count => layers.Count;

    public BertLayer this[int index] => layers[index];

    /// <summary>x [B, T, D] -> [B, T, D]; see <see cref="BertLayer.Forward"/> for the masks.</summary>
    public EncoderOutput Forward(Tensor x, Tensor? selfMask, Tensor? image = null, Tensor? imageMask = null,
        LayerGates[]? gates = null, bool collect = false) =>
        Forward(x, selfMask, image is null ? null : [image], imageMask, gates, collect);

    /// <summary>As above; layer i cross-attends to images[i % images.Count] (NLVR2: two images, alternating).</summary>
    public EncoderOutput Forward(Tensor x, Tensor? selfMask, IReadOnlyList<Tensor>? images, Tensor? imageMask,
        LayerGates[]? gates, bool collect)
    {
        var output = new EncoderOutput { Last = x };
        if (collect) output.Hidden.Add(x);
        for (int i = 0; i < layers.Count; i++)
        {
            var image = images is null || images.Count == 0 ? null : images[i % images.Count];
            x = layers[i].Forward(x, selfMask, image, imageMask, ModelGates.At(gates, i), collect, out var sp, out var cp);
            if (collect)
            {
                output.Hidden.Add(x);
                output.SelfAttentions.Add(sp);
                output.CrossAttentions.Add(cp);
            }
        }
        return new EncoderOutput { Last = x }.CopyCollected(output);
    }
}

/// <summary>Additive attention masks (0 keep, a large negative number drop).</summary>
public static class Masks
{
    public const float Drop = -10000f;

    /// <summary>padding [B, T] of 1 (token) / 0 (pad) -> [B, 1, 1, T]</summary>
    public static Tensor FromPadding(Tensor padding) =>
        padding.to(ScalarType.Float32).neg().add(Scalars.One, Scalars.One).mul(Scalars.Of(Drop)).view(padding.shape[0], 1, 1, padding.shape[1]);

    /// <summary>padding [B, T] -> causal + padding [B, 1, T, T]</summary>
    public static Tensor Causal(Tensor padding)
    {
        long t = padding.shape[1];
        var causal = torch.ones(t, t, device: padding.device).tril().neg().add(Scalars.One, Scalars.One).mul(Scalars.Of(Drop));   // (T, T)
        return FromPadding(padding).add(causal.view(1, 1, t, t), Scalars.One);
    }
}
