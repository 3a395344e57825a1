using static TorchSharp.torch;

namespace EfficientVlm.Model.Objectives;

/// <summary>
/// One image-text batch: images [B, 3, H, W], ids [B, T] ([CLS] ... [SEP] then padding), padding
/// [B, T] (1 token / 0 pad) and matches [B, B] (bool): matches[i, j] when text j is known to describe
/// image i, that is, text j is a caption of image i's own (the pair's caption, another caption of the
/// same image, or the same words as one of its captions). Matched pairs count as positives of each
/// other in ITC and are never drawn as ITM negatives.
/// </summary>
public sealed record PretrainBatch(Tensor Images, Tensor Ids, Tensor Padding, Tensor Matches)
{
    /// <summary>matches [B, B] from image ids [B] alone: pairs of the same image (when the other captions are unknown).</summary>
    public static Tensor SameImage(Tensor imageIds) => imageIds.view(-1, 1).eq(imageIds.view(1, -1));
}
