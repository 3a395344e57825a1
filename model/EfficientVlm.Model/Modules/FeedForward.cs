using EfficientVlm.Model.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Modules;

/// <summary>The activation an FFN uses: quick-GELU in the CLIP ViT, GELU in BERT.</summary>
public enum Activation
{
    Gelu,
    QuickGelu,
}

/// <summary>fc1 (D -> F), activation, neuron gate [F], fc2 (F -> D). With F = 0 the caller skips it.</summary>
public sealed class FeedForward : Module
{
    private readonly Linear? fc1;
    private readonly Linear? fc2;
    private readonly Activation _activation;

    public FeedForward(string name, int dim, int width, Activation activation, Device? device = null) : base(name)
    {
        Width = width;
        _activation = activation;
        if (width > 0)
        {
            fc1 = Linear(dim, width, device: device);
            fc2 = Linear(width, dim, device: device);
        }
        RegisterComponents();
    }

    public int Width { get; }

    /// <summary>[B, T, D] -> [B, T, D]</summary>
    public Tensor Forward(Tensor x, Tensor? neuronGate)
    {
        if (Width == 0) throw new InvalidOperationException("An FFN with no neurons is an identity; the layer skips it.");
        var h = fc1!.forward(x);                                                       // (B, T, F)
        h = _activation == Activation.QuickGelu ? h.mul(torch.sigmoid(h.mul(Scalars.Of(1.702)))) : functional.gelu(h);
        if (neuronGate is not null) h = h.mul(neuronGate);
        return fc2!.forward(h);
    }
}
