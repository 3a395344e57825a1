using EfficientVlm.Model.Objectives;
using EfficientVlm.Model.Tasks;
using EfficientVlm.Model.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Data.Pipeline;

/// <summary>Managed pixels of a batch: B images [3, S, S] back to back (CLIP-normalised).</summary>
public sealed record ImageBlock(float[] Pixels, int Count, int Size)
{
    public Tensor ToTensor(Device device) => torch.tensor(Pixels, device: device).view(Count, 3, Size, Size);
}

/// <summary>Image-text pairs (pre-training, retrieval, ITC/ITM): one caption per image, the image ids, and matches [B * B] (image i, text j), row-major.</summary>
public sealed record ImageTextBatchData(ImageBlock Images, long[][] Ids, long[] ImageIds, bool[] Matches, long Pad, long[][]? EditedIds = null)
{
    public PretrainBatch ToTensors(Device device)
    {
        var (ids, padding) = VlmTokenizer.Pad(Ids, Pad);
        var batch = new PretrainBatch(Images.ToTensor(device), ids.to(device), padding.to(device), torch.tensor(ImageIds, device: device),
            torch.tensor(Matches, device: device).view(Ids.Length, Ids.Length));
        if (EditedIds is null) return batch;
        var (edited, editedPadding) = VlmTokenizer.Pad(EditedIds, Pad);
        return batch with { EditedIds = edited.to(device), EditedPadding = editedPadding.to(device) };
    }
}

/// <summary>Captioning: [CLS] prompt caption [SEP]; the loss starts at <see cref="PromptLength"/>.</summary>
public sealed record CaptionBatchData(ImageBlock Images, long[][] Ids, int PromptLength, long Pad, long[] ImageIds)
{
    public (Tensor Images, Tensor Ids, Tensor Padding) ToTensors(Device device)
    {
        var (ids, padding) = VlmTokenizer.Pad(Ids, Pad);
        return (Images.ToTensor(device), ids.to(device), padding.to(device));
    }
}

/// <summary>VQA: questions and the distinct answers of each with their weights (count / number of answers).</summary>
public sealed record VqaBatchData(ImageBlock Images, long[][] Questions, long[][] Answers, long[] Owner, float[] Weight, long Pad)
{
    public (Tensor Images, Tensor Ids, Tensor Padding, VqaAnswers Answers) ToTensors(Device device)
    {
        var (ids, padding) = VlmTokenizer.Pad(Questions, Pad);
        var (answerIds, answerPadding) = VlmTokenizer.Pad(Answers, Pad);
        return (Images.ToTensor(device), ids.to(device), padding.to(device),
            new VqaAnswers(answerIds.to(device), answerPadding.to(device), torch.tensor(Owner, device: device), torch.tensor(Weight, device: device)));
    }
}

/// <summary>NLVR2: left and right images, statements, labels (1 = true).</summary>
public sealed record NlvrBatchData(ImageBlock Left, ImageBlock Right, long[][] Ids, long[] Labels, long Pad)
{
    public (Tensor Left, Tensor Right, Tensor Ids, Tensor Padding, Tensor Labels) ToTensors(Device device)
    {
        var (ids, padding) = VlmTokenizer.Pad(Ids, Pad);
        return (Left.ToTensor(device), Right.ToTensor(device), ids.to(device), padding.to(device), torch.tensor(Labels, device: device));
    }
}

/// <summary>NLVR2 with both images as rows of a <c>VisionTokenCache</c>: the rows of the left and right images, statements, labels.</summary>
public sealed record NlvrTokenBatchData(int[] Left, int[] Right, long[][] Ids, long[] Labels, long Pad)
{
    public (Tensor Ids, Tensor Padding, Tensor Labels) ToTensors(Device device)
    {
        var (ids, padding) = VlmTokenizer.Pad(Ids, Pad);
        return (ids.to(device), padding.to(device), torch.tensor(Labels, device: device));
    }
}
