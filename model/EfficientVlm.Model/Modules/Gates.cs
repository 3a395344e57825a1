using EfficientVlm.Model.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Modules;

/// <summary>Gates of one layer: per-head for self- and cross-attention, per-neuron for the FFN (null: all open).</summary>
public sealed record LayerGates(Tensor? Heads = null, Tensor? CrossHeads = null, Tensor? Ffn = null);

/// <summary>Gates for every layer of every stack. A missing stack or layer means "not gated".</summary>
public sealed class ModelGates
{
    public LayerGates[]? Vision { get; init; }
    public LayerGates[]? Text { get; init; }
    public LayerGates[]? Fusion { get; init; }
    public LayerGates[]? Decoder { get; init; }
    /// <summary>One row per inner convolution of the conv stem (its output channels; part of the vision modality); null: not gated.</summary>
    public Tensor[]? Stem { get; init; }

    public static LayerGates? At(LayerGates[]? stack, int layer) => stack is null ? null : stack[layer];
}

internal static class GateMath
{
    /// <summary>
    /// A gated sub-block whose gates are all zero is an identity (residual only), exactly as the
    /// shrunk model with nothing left. Keeps the choice on the device: no host sync.
    /// </summary>
    public static Tensor IdentityWhenClosed(Tensor gate, Tensor output, Tensor input)
    {
        var open = gate.abs().sum().gt(Scalars.Of(0));
        return torch.where(open, output, input);
    }
}
