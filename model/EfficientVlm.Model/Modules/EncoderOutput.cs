using static TorchSharp.torch;

namespace EfficientVlm.Model.Modules;

/// <summary>
/// What a stack returns: the last hidden state, and, when asked (distillation), every hidden state
/// (index 0 = the stack's input/embeddings) and every attention probability map.
/// </summary>
public sealed class EncoderOutput
{
    public required Tensor Last { get; init; }
    public List<Tensor> Hidden { get; } = [];
    public List<Tensor?> SelfAttentions { get; } = [];
    public List<Tensor?> CrossAttentions { get; } = [];
}
