using static TorchSharp.torch;

namespace EfficientVlm.Model.Objectives;

/// <summary>
/// One image-text batch: images [B, 3, H, W], ids [B, T] ([CLS] ... [SEP] then padding), padding
/// [B, T] (1 token / 0 pad), imageIds [B] (the same id for captions of one image: they count as
/// positives of each other in ITC) and matches [B, B] (bool): matches[i, j] when text j is known to
/// describe image i, that is, text j is a caption of image i's (the pair's caption, another caption
/// of the same image, or the same words as one of its captions). Matched pairs are never drawn as
/// ITM negatives. <see cref="EditedIds"/> [B, T'] with <see cref="EditedPadding"/>, when given: an edited copy of
/// each caption that no longer describes its image (<see cref="CaptionNegatives"/>), an extra negative for ITC and ITM.
/// </summary>
public sealed record PretrainBatch(Tensor Images, Tensor Ids, Tensor Padding, Tensor ImageIds, Tensor Matches)
{
    public Tensor? EditedIds { get; init; }
    public Tensor? EditedPadding { get; init; }

    /// <summary>A batch whose only known matches are captions of the same image.</summary>
    public PretrainBatch(Tensor images, Tensor ids, Tensor padding, Tensor imageIds)
        : this(images, ids, padding, imageIds, SameImage(imageIds)) { }

    /// <summary>matches [B, B] from image ids [B] alone: pairs of the same image (when the other captions are unknown).</summary>
    public static Tensor SameImage(Tensor imageIds) => imageIds.view(-1, 1).eq(imageIds.view(1, -1));
}
