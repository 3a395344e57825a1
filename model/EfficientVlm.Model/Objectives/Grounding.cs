using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Objectives;

/// <summary>
/// Object-level supervision from object annotations (COCO instances), the signal X-VLM's teacher learns
/// from and the ShapesWorld plateau lacked (docs/training.md, "The CPU teacher"). Two heads, owned by the
/// training stage and not part of the model:
/// - <b>box</b> (X-VLM's bbox head): the fused [CLS] of an object's description predicts its box
///   (centre x, centre y, width, height as shares of the image), trained with L1 + generalised IoU;
/// - <b>patch</b>: every patch token out of the vision encoder predicts the category of the object whose
///   box holds the patch centre (the smallest such box), or none: dense, per-token evidence of what is where.
/// </summary>
public sealed class GroundingHeads : Module
{
    private readonly Linear box_dense;
    private readonly LayerNorm box_norm;
    private readonly Linear box_out;
    private readonly Linear patch_out;

    public GroundingHeads(int hidden, int categories, Device? device) : base("grounding")
    {
        box_dense = Linear(hidden, hidden, device: device);
        box_norm = LayerNorm(hidden, 1e-5, device: device);
        box_out = Linear(hidden, 4, device: device);
        patch_out = Linear(hidden, categories + 1, device: device);
        Categories = categories;
        RegisterComponents();
    }

    public int Categories { get; }

    /// <summary>fused states [B, T, D] -> boxes [B, 4] (cx, cy, w, h in [0, 1]) from [CLS]</summary>
    public Tensor Box(Tensor fused) =>
        box_out.forward(functional.gelu(box_norm.forward(box_dense.forward(fused.select(1, 0))))).sigmoid();

    /// <summary>image tokens [B, N, D] (class token first) -> patch logits [B, N-1, C+1] (index 0: no object)</summary>
    public Tensor Patches(Tensor imageTokens) => patch_out.forward(imageTokens.narrow(1, 1, imageTokens.shape[1] - 1));
}

/// <summary>The grounding losses and the targets they are computed from.</summary>
public static class Grounding
{
    /// <summary>
    /// Patch targets [G * G] of one image resized to <paramref name="imageSize"/>: 0 where no box holds the patch
    /// centre, else 1 + the category's index in <paramref name="categoryIndex"/> of the smallest box that does.
    /// </summary>
    public static long[] PatchTargets(ImageObjects image, int imageSize, int patch, IReadOnlyDictionary<int, int> categoryIndex)
    {
        var targets = new long[(imageSize / patch) * (imageSize / patch)];
        foreach (var o in image.Objects.OrderBy(o => o.Width * o.Height))
        {
            var inside = PatchesInside(o, image.Width, image.Height, imageSize, patch);
            for (int i = 0; i < targets.Length; i++)
                if (targets[i] == 0 && inside[i] > 0) targets[i] = 1 + categoryIndex[o.CategoryId];
        }
        return targets;
    }

    /// <summary>
    /// Which patches of a G x G grid (image resized to <paramref name="imageSize"/>) have their centre inside
    /// <paramref name="box"/> -> [G * G] of 0 / 1. A box at least one patch wide holds at least one centre.
    /// </summary>
    public static float[] PatchesInside(ObjectBox box, int width, int height, int imageSize, int patch)
    {
        int grid = imageSize / patch;
        var inside = new float[grid * grid];
        float sx = (float)imageSize / width, sy = (float)imageSize / height;
        for (int r = 0; r < grid; r++)
            for (int c = 0; c < grid; c++)
            {
                float px = (c + 0.5f) * patch, py = (r + 0.5f) * patch;
                if (px >= box.X * sx && px < (box.X + box.Width) * sx && py >= box.Y * sy && py < (box.Y + box.Height) * sy)
                    inside[r * grid + c] = 1;
            }
        return inside;
    }

    /// <summary>
    /// Attention grounding: the cross-attention of a description's tokens, averaged over heads, should fall on
    /// the described object's patches. probs [B, H, T, N] (class token first), padding [B, T], inside [B, N-1]
    /// (<see cref="PatchesInside"/>), has [B] (1: the row has an object) -> mean over real tokens of
    /// -log(attention mass on the object).
    /// </summary>
    public static Tensor AttentionLoss(Tensor probs, Tensor padding, Tensor inside, Tensor has)
    {
        var mean = probs.mean([1]);                                                            // (B, T, N)
        var patches = mean.narrow(2, 1, mean.shape[2] - 1);                                    // (B, T, N-1)
        var mass = patches.mul(inside.unsqueeze(1)).sum(2);                                    // (B, T)
        var nll = mass.clamp_min(Scalars.Of(1e-6)).log().neg();
        var weight = padding.to(nll.dtype).mul(has.view(-1, 1));
        return nll.mul(weight).sum().div(weight.sum().clamp_min(Scalars.One));
    }

    /// <summary>A box [x, y, w, h] in pixels of an image -> (cx, cy, w, h) as shares of its sides, clamped to the image.</summary>
    public static float[] BoxTarget(ObjectBox box, int width, int height)
    {
        float x0 = Math.Clamp(box.X, 0, width), y0 = Math.Clamp(box.Y, 0, height);
        float x1 = Math.Clamp(box.X + box.Width, 0, width), y1 = Math.Clamp(box.Y + box.Height, 0, height);
        return [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height];
    }

    /// <summary>L1 + (1 - GIoU), each averaged over the boxes: predicted and target [B, 4] as (cx, cy, w, h).</summary>
    public static (Tensor L1, Tensor Giou) BoxLoss(Tensor predicted, Tensor target)
    {
        var l1 = predicted.add(target, Scalars.MinusOne).abs().sum(1).mean();
        var giou = GeneralizedIou(Corners(predicted), Corners(target));
        return (l1, giou.neg().add(Scalars.One).mean());
    }

    /// <summary>Generalised IoU (Rezatofighi et al. 2019) of corner boxes [B, 4] (x0, y0, x1, y1), pairwise by row -> [B].</summary>
    public static Tensor GeneralizedIou(Tensor a, Tensor b)
    {
        // held Scalars throughout (docs/platform.md, the TorchSharp Scalar crash)
        var eps = Scalars.Of(1e-7);
        var zero = Scalars.Of(0.0);
        Tensor Span(Tensor lo, Tensor hi) => hi.add(lo, Scalars.MinusOne).clamp_min(zero);
        Tensor Area(Tensor box)
        {
            var wh = Span(box.narrow(1, 0, 2), box.narrow(1, 2, 2));
            return wh.select(1, 0).mul(wh.select(1, 1));
        }
        var inter = Area(torch.cat([torch.maximum(a.narrow(1, 0, 2), b.narrow(1, 0, 2)), torch.minimum(a.narrow(1, 2, 2), b.narrow(1, 2, 2))], 1));
        var union = Area(a).add(Area(b), Scalars.One).add(inter, Scalars.MinusOne);
        var iou = inter.div(union.clamp_min(eps));
        var hull = Area(torch.cat([torch.minimum(a.narrow(1, 0, 2), b.narrow(1, 0, 2)), torch.maximum(a.narrow(1, 2, 2), b.narrow(1, 2, 2))], 1))
            .clamp_min(eps);
        return iou.add(hull.add(union, Scalars.MinusOne).div(hull), Scalars.MinusOne);
    }

    /// <summary>(cx, cy, w, h) [B, 4] -> (x0, y0, x1, y1) [B, 4]</summary>
    public static Tensor Corners(Tensor box)
    {
        var centre = box.narrow(1, 0, 2);
        var half = box.narrow(1, 2, 2).mul(Scalars.Of(0.5));
        return torch.cat([centre.add(half, Scalars.MinusOne), centre.add(half, Scalars.One)], 1);
    }
}
