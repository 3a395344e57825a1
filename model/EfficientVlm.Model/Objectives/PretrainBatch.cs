using static TorchSharp.torch;

namespace EfficientVlm.Model.Objectives;

/// <summary>
/// One image-text batch: images [B, 3, H, W], ids [B, T] ([CLS] ... [SEP] then padding), padding
/// [B, T] (1 token / 0 pad) and imageIds [B] (the same id for captions of one image: they count as
/// positives of each other in ITC and are never drawn as ITM negatives).
/// </summary>
public sealed record PretrainBatch(Tensor Images, Tensor Ids, Tensor Padding, Tensor ImageIds);
