using EfficientVlm.Model.Config;
using EfficientVlm.Model.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Modules;

/// <summary>One pre-LayerNorm ViT block: x + attn(ln1 x), then x + ffn(ln2 x), quick-GELU.</summary>
public sealed class VisionLayer : Module
{
    private readonly LayerNorm ln_1;
    private readonly Attention attn;
    private readonly LayerNorm ln_2;
    private readonly FeedForward mlp;

    public VisionLayer(string name, VlmConfig config, LayerShape shape, Device? device) : base(name)
    {
        ln_1 = LayerNorm(config.Hidden, 1e-5, device: device);
        attn = new Attention("attn", config.Hidden, config.Hidden, shape.Heads, config.HeadSize, device);
        ln_2 = LayerNorm(config.Hidden, 1e-5, device: device);
        mlp = new FeedForward("mlp", config.Hidden, shape.FfnWidth, Activation.QuickGelu, device);
        RegisterComponents();
    }

    /// <summary>[B, N, D] -> [B, N, D]</summary>
    public Tensor Forward(Tensor x, LayerGates? gates, bool keepProbs, out Tensor? probs)
    {
        probs = null;
        if (attn.Heads > 0)
        {
            var h = ln_1.forward(x);
            var y = x.add(attn.Forward(h, h, null, gates?.Heads, keepProbs, out probs), Scalars.One);
            x = gates?.Heads is { } g ? GateMath.IdentityWhenClosed(g, y, x) : y;
        }
        if (mlp.Width > 0)
        {
            var y = x.add(mlp.Forward(ln_2.forward(x), gates?.Ffn), Scalars.One);
            x = gates?.Ffn is { } g ? GateMath.IdentityWhenClosed(g, y, x) : y;
        }
        return x;
    }
}

/// <summary>
/// CLIP-style ViT: conv patch embedding (no bias), class token, learned positions, ln_pre, L
/// pre-LN blocks, ln_post on every token (X-VLM keeps all tokens for the fusion encoder).
/// With <see cref="VisionStem.Conv"/> the patch embedding is a small convolutional stem instead
/// (<see cref="ConvStem"/>); the rest is the same.
/// </summary>
public sealed class VisionEncoder : Module
{
    private readonly Conv2d? conv1;
    private readonly ConvStem? stem;
    private readonly Parameter class_embedding;
    private readonly Parameter positional_embedding;
    private readonly LayerNorm ln_pre;
    private readonly ModuleList<VisionLayer> layers;
    private readonly LayerNorm ln_post;
    private readonly int _patch;

    public VisionEncoder(string name, VlmConfig config, Device? device) : base(name)
    {
        _patch = config.PatchSize;
        if (config.Stem == VisionStem.Conv) stem = new ConvStem("stem", config.Hidden, config.PatchSize, device, config.StemWidths);
        else conv1 = Conv2d(3, config.Hidden, config.PatchSize, stride: config.PatchSize, bias: false, device: device);
        class_embedding = Parameter(torch.randn(config.Hidden, device: device).mul_(Math.Pow(config.Hidden, -0.5)));
        // By default CLIP's scale, D^-0.5. At 0.01 (a sixth of it at D = 256) the tokens of object patches did not
        // say where they were. At D^-0.5 they do, but the cell is still only ~0.4% of their variance and the fusion
        // did not learn to read it at demo budgets; from a 0.5 start (config.PositionInit) it did on single objects,
        // not with several objects in view, nor in ordinary VQA (docs/training.md, "Position").
        // SinCos (the CPU presets): each patch's row and column as sines and cosines, entries of size 1 like the
        // content after ln_pre, so a token says where it is from the first step.
        positional_embedding = Parameter(config.Positions == VisionPositions.SinCos
            ? SinCos2d(config.ImageSize / config.PatchSize, config.Hidden).to(device ?? torch.CPU)
            : torch.randn(config.ImageTokens, config.Hidden, device: device).mul_(config.PositionInit ?? Math.Pow(config.Hidden, -0.5)));
        ln_pre = LayerNorm(config.Hidden, 1e-5, device: device);
        layers = new ModuleList<VisionLayer>(Enumerable.Range(0, config.VisionLayers)
            .Select(i => new VisionLayer($"{i}", config, config.Shape(Stack.Vision, i), device)).ToArray());
        ln_post = LayerNorm(config.Hidden, 1e-5, device: device);
        RegisterComponents();
    }

    /// <summary>images [B, C, H, W] (normalised) -> tokens [B, N, D]; <paramref name="stemGates"/>: one gate row per inner stem convolution.</summary>
    public EncoderOutput Forward(Tensor images, LayerGates[]? gates = null, bool collect = false, Tensor[]? stemGates = null)
    {
        if (stemGates is not null && stem is null) throw new ArgumentException("Stem gates need the conv stem; this encoder has a patch projection.");
        if (images.dim() != 4 || images.shape[1] != 3 || images.shape[2] % _patch != 0 || images.shape[3] % _patch != 0)
            throw new ArgumentException($"Images must be [B, 3, H, W] with H and W multiples of {_patch}; got [{string.Join(", ", images.shape)}].");
        var x = stem is not null ? stem.Forward(images, stemGates) : conv1!.forward(images); // (B, D, P, P)
        long b = x.shape[0], d = x.shape[1];
        x = x.flatten(2).transpose(1, 2);                                               // (B, P*P, D)
        var cls = class_embedding.view(1, 1, d).expand(b, 1, d);
        x = torch.cat([cls, x], 1);                                                     // (B, N, D)
        if (x.shape[1] != positional_embedding.shape[0])
            throw new ArgumentException($"Images give {x.shape[1]} tokens but the model has {positional_embedding.shape[0]} positions (image size mismatch).");
        x = ln_pre.forward(x.add(positional_embedding, Scalars.One));
        var output = new EncoderOutput { Last = x };
        var result = Run(x, gates, collect, output);
        return new EncoderOutput { Last = ln_post.forward(result) }.CopyCollected(output);
    }

    /// <summary>
    /// 2-D sine-cosine positions [1 + G*G, D] for a G x G patch grid (row-major, after a zero row for the class
    /// token): the first D/2 features encode the row, the rest the column, each as D/4 sines and D/4 cosines
    /// at geometric frequencies (MAE's layout).
    /// </summary>
    public static Tensor SinCos2d(int grid, int hidden)
    {
        int quarter = hidden / 4;
        var table = new float[(1 + grid * grid) * hidden];
        for (int r = 0; r < grid; r++)
            for (int c = 0; c < grid; c++)
            {
                int row = 1 + r * grid + c;
                for (int k = 0; k < quarter; k++)
                {
                    double frequency = 1.0 / Math.Pow(100.0, (double)k / quarter);
                    table[row * hidden + k] = (float)Math.Sin(r * frequency);
                    table[row * hidden + quarter + k] = (float)Math.Cos(r * frequency);
                    table[row * hidden + 2 * quarter + k] = (float)Math.Sin(c * frequency);
                    table[row * hidden + 3 * quarter + k] = (float)Math.Cos(c * frequency);
                }
            }
        return torch.tensor(table).view(1 + grid * grid, hidden);
    }

    private Tensor Run(Tensor x, LayerGates[]? gates, bool collect, EncoderOutput output)
    {
        if (collect) output.Hidden.Add(x);
        for (int i = 0; i < layers.Count; i++)
        {
            x = layers[i].Forward(x, ModelGates.At(gates, i), collect, out var probs);
            if (collect)
            {
                output.Hidden.Add(x);
                output.SelfAttentions.Add(probs);
            }
        }
        return x;
    }
}

/// <summary>
/// A small convolutional stem in place of the PxP patch projection: 3x3 convolutions with GELU, the first at
/// full resolution and each later one halving it, to the P-times-smaller patch grid at D channels (receptive
/// field 17 px at P = 8), so a shape that straddles patch borders is still seen whole by one token.
/// </summary>
public sealed class ConvStem : Module
{
    private readonly ModuleList<Conv2d> convs;

    /// <param name="inner">The widths of the convolutions before the last (which gives <paramref name="hidden"/>); null: the
    /// preset's, 16 doubling per halving up to <paramref name="hidden"/>. One per halving of <paramref name="patch"/>.</param>
    public ConvStem(string name, int hidden, int patch, Device? device, IReadOnlyList<int>? inner = null) : base(name)
    {
        int halvings = (int)Math.Round(Math.Log2(patch));
        if (inner is not null && (inner.Count != halvings || inner.Any(w => w < 1)))
            throw new ArgumentException($"A stem for patch {patch} has {halvings} inner widths, each at least 1; got [{string.Join(", ", inner)}].");
        int[] widths = [.. inner ?? VlmConfig.DefaultStemWidths(hidden, patch), hidden];
        var layers = new List<Conv2d> { Conv2d(3, widths[0], 3, padding: 1, device: device) };
        for (int i = 0; i < halvings; i++)
            layers.Add(Conv2d(widths[i], widths[i + 1], 3, stride: 2, padding: 1, device: device));
        convs = new ModuleList<Conv2d>(layers.ToArray());
        RegisterComponents();
    }

    /// <summary>
    /// images [B, 3, H, W] -> [B, D, H/P, W/P]. <paramref name="gates"/> (pruning): one row [C_i] per inner convolution,
    /// multiplying its channels after the GELU, so a channel gated to 0 feeds exact zeros on, as if it were cut.
    /// </summary>
    public Tensor Forward(Tensor images, Tensor[]? gates = null)
    {
        if (gates is not null && gates.Length != convs.Count - 1)
            throw new ArgumentException($"The stem has {convs.Count - 1} inner convolutions; got {gates.Length} gate rows.");
        var x = images;
        for (int i = 0; i < convs.Count; i++)
        {
            x = convs[i].forward(x);
            if (i == convs.Count - 1) break;
            x = functional.gelu(x);
            if (gates is not null) x = x.mul(gates[i].view(1, -1, 1, 1));
        }
        return x;
    }
}

internal static class EncoderOutputExtensions
{
    public static EncoderOutput CopyCollected(this EncoderOutput target, EncoderOutput source)
    {
        target.Hidden.AddRange(source.Hidden);
        target.SelfAttentions.AddRange(source.SelfAttentions);
        target.CrossAttentions.AddRange(source.CrossAttentions);
        return target;
    }
}
