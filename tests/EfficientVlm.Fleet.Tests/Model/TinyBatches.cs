using EfficientVlm.Model.Config;
using EfficientVlm.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Fleet.Tests.Model;

/// <summary>Small fixed batches for the tiny preset.</summary>
internal static class TinyBatches
{
    public static readonly SpecialTokens Tokens = new(Pad: 0, Unk: 1, Cls: 2, Sep: 3, Mask: 4, VocabSize: Presets.Tiny.VocabSize);

    /// <summary>4 texts over 3 images (texts 0 and 1 describe image 0), lengths 6, 7, 5, 7 padded to 7.</summary>
    public static PretrainBatch Pretrain(VlmConfig config)
    {
        var images = torch.randn(3, 3, config.ImageSize, config.ImageSize);
        var imageIndex = torch.tensor(new long[] { 0, 0, 1, 2 });
        int[] lengths = [6, 7, 5, 7];
        var ids = torch.zeros(4, 7, dtype: ScalarType.Int64);
        var padding = torch.zeros(4, 7, dtype: ScalarType.Int64);
        for (int i = 0; i < 4; i++)
        {
            ids[i, 0] = torch.tensor(Tokens.Cls);
            ids[i, TensorIndex.Slice(1, lengths[i] - 1)] = torch.randint(5, config.VocabSize, new long[] { lengths[i] - 2 });
            ids[i, lengths[i] - 1] = torch.tensor(Tokens.Sep);
            padding[i, TensorIndex.Slice(0, lengths[i])] = torch.tensor(1L);
        }
        return new PretrainBatch(images.index_select(0, imageIndex), ids, padding, imageIndex);
    }
}
