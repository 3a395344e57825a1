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
/// </summary>
public sealed class VisionEncoder : Module
{
    private readonly Conv2d conv1;
    private readonly Parameter class_embedding;
    private readonly Parameter positional_embedding;
    private readonly LayerNorm ln_pre;
    private readonly ModuleList<VisionLayer> layers;
    private readonly LayerNorm ln_post;
    private readonly int _patch;

    public VisionEncoder(string name, VlmConfig config, Device? device) : base(name)
    {
        _patch = config.PatchSize;
        conv1 = Conv2d(3, config.Hidden, config.PatchSize, stride: config.PatchSize, bias: false, device: device);
        class_embedding = Parameter(torch.randn(config.Hidden, device: device).mul_(Math.Pow(config.Hidden, -0.5)));
        // By default CLIP's scale, D^-0.5. At 0.01 (a sixth of it at D = 256) the tokens of object patches did not
        // say where they were. At D^-0.5 they do, but the cell is still only ~0.4% of their variance and the fusion
        // did not learn to read it at demo budgets; from a 0.5 start (config.PositionInit) it did on single objects,
        // not with several objects in view, nor in ordinary VQA (docs/training.md, "Position").
        positional_embedding = Parameter(torch.randn(config.ImageTokens, config.Hidden, device: device)
            .mul_(config.PositionInit ?? Math.Pow(config.Hidden, -0.5)));
        ln_pre = LayerNorm(config.Hidden, 1e-5, device: device);
        layers = new ModuleList<VisionLayer>(Enumerable.Range(0, config.VisionLayers)
            .Select(i => new VisionLayer($"{i}", config, config.Shape(Stack.Vision, i), device)).ToArray());
        ln_post = LayerNorm(config.Hidden, 1e-5, device: device);
        RegisterComponents();
    }

    /// <summary>images [B, C, H, W] (normalised) -> tokens [B, N, D]</summary>
    public EncoderOutput Forward(Tensor images, LayerGates[]? gates = null, bool collect = false)
    {
        if (images.dim() != 4 || images.shape[1] != 3 || images.shape[2] % _patch != 0 || images.shape[3] % _patch != 0)
            throw new ArgumentException($"Images must be [B, 3, H, W] with H and W multiples of {_patch}; got [{string.Join(", ", images.shape)}].");
        var x = conv1.forward(images);                                                  // (B, D, P, P)
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
