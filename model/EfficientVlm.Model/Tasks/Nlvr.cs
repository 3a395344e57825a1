using EfficientVlm.Model.Modules;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Tasks;

/// <summary>NLVR2: is the statement true of the pair of images?</summary>
public static class Nlvr
{
    /// <summary>images0, images1 [B, 3, H, W], statement ids [B, T] -> logits [B, 2] (index 1 = true)</summary>
    public static Tensor Logits(VlmModel model, Tensor images0, Tensor images1, Tensor ids, Tensor padding, ModelGates? gates = null)
    {
        long b = images0.shape[0];
        var both = model.EncodeImage(torch.cat([images0, images1], 0), gates).Last;      // (2B, N, D)
        var text = model.EncodeText(ids, padding, gates).Last;
        var fused = model.FusePair(text, padding, both.narrow(0, 0, b), both.narrow(0, b, b), gates).Last;
        return model.NlvrLogits(fused);
    }

    public static Tensor Loss(VlmModel model, Tensor images0, Tensor images1, Tensor ids, Tensor padding, Tensor labels,
        ModelGates? gates = null) =>
        functional.cross_entropy(Logits(model, images0, images1, ids, padding, gates), labels);
}
