using EfficientVlm.Model.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Modules;

/// <summary>
/// Multi-head attention with separate Q/K/V projections (nh * hs wide) and an output projection.
/// The head count is per layer (a shrunk model is built with fewer); with 0 heads the module has no weights and
/// the caller skips it. A head gate [nh] multiplies each head's context before the output projection.
/// </summary>
public sealed class Attention : Module
{
    private readonly Linear? query;
    private readonly Linear? key;
    private readonly Linear? value;
    private readonly Linear? output;
    private readonly int _headSize;
    private readonly SharedKeyValue? _shared;

    /// <param name="keyValueFrom">Another attention whose key/value projections this one uses
    /// (NLVR2: the two cross-attentions of a fusion pair share them); it must keep the same heads.</param>
    public Attention(string name, int dim, int sourceDim, int heads, int headSize, Device? device = null,
        Attention? keyValueFrom = null) : base(name)
    {
        Heads = heads;
        _headSize = headSize;
        if (keyValueFrom is not null && keyValueFrom.Heads != heads)
            throw new ArgumentException($"Attention '{name}' shares key/value with one of {keyValueFrom.Heads} heads but has {heads}.");
        if (heads > 0)
        {
            query = Linear(dim, heads * headSize, device: device);
            if (keyValueFrom is null)
            {
                key = Linear(sourceDim, heads * headSize, device: device);
                value = Linear(sourceDim, heads * headSize, device: device);
            }
            else
            {
                _shared = new SharedKeyValue(keyValueFrom);
            }
            output = Linear(heads * headSize, dim, device: device);
        }
        RegisterComponents();
    }

    /// <summary>Holds a borrowed module outside the registered fields (its parameters belong to the owner).</summary>
    private sealed class SharedKeyValue(Attention owner)
    {
        public Attention Owner { get; } = owner;
    }

    private (Tensor Key, Tensor Value) ProjectKeyValue(Tensor source) =>
        _shared is not null ? _shared.Owner.ProjectKeyValue(source) : (key!.forward(source), value!.forward(source));

    public int Heads { get; }

    /// <summary>
    /// x [B, T, D], source [B, S, Ds], additive mask broadcastable to [B, nh, T, S] (0 keep, -inf drop)
    /// -> [B, T, D]; <paramref name="probs"/> gets the attention probabilities [B, nh, T, S] when asked.
    /// </summary>
    public Tensor Forward(Tensor x, Tensor source, Tensor? mask, Tensor? headGate, bool keepProbs, out Tensor? probs)
    {
        if (Heads == 0) throw new InvalidOperationException("An attention block with no heads is an identity; the layer skips it.");
        long b = x.shape[0], t = x.shape[1], s = source.shape[1];
        var q = query!.forward(x).view(b, t, Heads, _headSize).transpose(1, 2);      // (B, nh, T, hs)
        var (kp, vp) = ProjectKeyValue(source);
        var k = kp.view(b, s, Heads, _headSize).transpose(1, 2);                     // (B, nh, S, hs)
        var v = vp.view(b, s, Heads, _headSize).transpose(1, 2);                     // (B, nh, S, hs)
        var scores = q.matmul(k.transpose(-2, -1)).div(Scalars.Of(Math.Sqrt(_headSize))); // (B, nh, T, S)
        if (mask is not null) scores = scores.add(mask, Scalars.One);
        var attention = scores.softmax(-1);
        probs = keepProbs ? attention : null;
        var context = attention.matmul(v);                                            // (B, nh, T, hs)
        if (headGate is not null) context = context.mul(headGate.view(1, Heads, 1, 1));
        context = context.transpose(1, 2).reshape(b, t, Heads * _headSize);           // (B, T, nh*hs)
        return output!.forward(context);
    }
}
