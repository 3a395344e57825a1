using EfficientVlm.Model.Modules;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Tasks;

/// <summary>NLVR2: is the statement true of the pair of images?</summary>
public static class Nlvr
{
    /// <summary>images0, images1 [B, 3, H, W], statement ids [B, T] -> logits [B, 2] (index 1 = true)</summary>
    public static Tensor Logits(VlmModel model, Tensor images0, Tensor images1, Tensor ids, Tensor padding, ModelGates? gates = null) =>
        LogitsStreams(model, images0, images1, ids, padding, gates, collect: false).Logits;

    /// <summary>
    /// As <see cref="Logits"/>, with each stream's output (<paramref name="collect"/>: every state and attention map, for KD).
    /// The vision stream holds both images ([2B, ...], the first images first); fusion layers alternate images.
    /// </summary>
    public static (Tensor Logits, EncoderOutput Vision, EncoderOutput Text, EncoderOutput Fusion) LogitsStreams(VlmModel model, Tensor images0,
        Tensor images1, Tensor ids, Tensor padding, ModelGates? gates = null, bool collect = true)
    {
        long b = images0.shape[0];
        var vision = model.EncodeImage(torch.cat([images0, images1], 0), gates, collect);    // (2B, N, D)
        var both = vision.Last;
        var text = model.EncodeText(ids, padding, gates, collect);
        var fused = model.FusePair(text.Last, padding, both.narrow(0, 0, b), both.narrow(0, b, b), gates, collect);
        return (model.NlvrLogits(fused.Last), vision, text, fused);
    }

    /// <summary>
    /// As <see cref="Logits"/>, from each image's vision tokens [B, N, D] instead of its pixels (a frozen encoder's,
    /// read from <c>VisionTokenCache</c>).
    /// </summary>
    public static Tensor LogitsFromTokens(VlmModel model, Tensor tokens0, Tensor tokens1, Tensor ids, Tensor padding)
    {
        var text = model.EncodeText(ids, padding);
        return model.NlvrLogits(model.FusePair(text.Last, padding, tokens0, tokens1).Last);
    }

    public static Tensor Loss(VlmModel model, Tensor images0, Tensor images1, Tensor ids, Tensor padding, Tensor labels,
        ModelGates? gates = null) =>
        functional.cross_entropy(Logits(model, images0, images1, ids, padding, gates), labels);
}
