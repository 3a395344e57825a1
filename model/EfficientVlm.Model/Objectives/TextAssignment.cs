using EfficientVlm.Model.Modules;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Objectives;

/// <summary>
/// Text assignment, the NLVR2 domain pre-training of X-VLM (which EfficientVLM's NLVR2 teachers start
/// from): one caption and two images, and which image the caption describes: the first (label 0), the
/// second (1) or neither (2). It teaches the doubled fusion stack of an NLVR2 model to hold a text
/// against two images before it sees a single NLVR2 statement (docs/training.md).
/// </summary>
public static class TextAssignment
{
    public const int Classes = 3;

    /// <summary>The fewest images a batch needs: a caption's own image and two others.</summary>
    public const int MinImages = 3;

    /// <summary>The temperature of the image-image similarity that picks the other images.</summary>
    public const double Temperature = 0.07;

    /// <summary>
    /// The pairs of a batch of (image, caption) rows. For caption b: with probability 2/3 its own image
    /// and one other, on a random side (label 0 or 1); else two other images (label 2). Other images are
    /// drawn without replacement from softmax(image-image similarity / 0.07) over the images that do not
    /// match caption b (<paramref name="matches"/> [B, B], image i, text j), so a label is never wrong
    /// because another image also fits the caption. imageEmb [B, E] (L2-normalised) -> indices [B] of the
    /// first and second image, labels [B]. <paramref name="hardShare"/> below 1 mixes uniformly drawn
    /// images in, as for ITM negatives (<see cref="Pretraining.DrawWeights"/>; 1 is X-VLM's draw).
    /// </summary>
    public static (Tensor First, Tensor Second, Tensor Labels) Sample(Tensor imageEmb, Tensor matches, double hardShare = 1.0)
    {
        using var _ = torch.no_grad();
        long b = imageEmb.shape[0];
        if (b < MinImages) throw new ArgumentException($"Text assignment needs at least {MinImages} images per batch; got {b}.");
        var sim = imageEmb.matmul(imageEmb.t()).div(Temperature);                            // (B, B) images x images
        var open = matches.t().logical_not().to(ScalarType.Float32);                          // (B, B) caption b x image i
        var weights = Pretraining.DrawWeights(sim, open, hardShare);
        // a caption that fits all but one image of the batch: fall back to any other image (labels may then be noisy)
        var enough = open.sum(1).ge(2).view(-1, 1);
        var notOwn = torch.ones(b, b, device: imageEmb.device).sub(torch.eye(b, device: imageEmb.device));
        var others = torch.multinomial(torch.where(enough, weights, notOwn), 2);                  // (B, 2), distinct
        var own = torch.arange(b, device: imageEmb.device);
        var withOwn = torch.rand(b, device: imageEmb.device).gt(1.0 / 3);
        var ownFirst = torch.rand(b, device: imageEmb.device).lt(0.5);
        var other0 = others.select(1, 0);
        var first = torch.where(withOwn.logical_and(ownFirst), own, other0);
        var second = torch.where(withOwn, torch.where(ownFirst, other0, own), others.select(1, 1));
        var labels = torch.where(withOwn, torch.where(ownFirst, torch.zeros_like(own), torch.ones_like(own)), torch.full_like(own, 2));
        return (first, second, labels);
    }

    /// <summary>
    /// Logits [B, 3] of the text-assignment head over the fused [CLS] of an NLVR2 model: image tokens
    /// [B, N, D] of the batch, the captions' text states [B, T, D] and padding [B, T], and the indices
    /// of each row's first and second image.
    /// </summary>
    public static Tensor Logits(VlmModel model, Linear head, Tensor imageTokens, Tensor textStates, Tensor padding, Tensor first, Tensor second) =>
        head.forward(model.FusePair(textStates, padding, imageTokens.index_select(0, first), imageTokens.index_select(0, second)).Last.select(1, 0));

    /// <summary>Cross-entropy of text assignment on a batch, with pairs drawn by <see cref="Sample"/>.</summary>
    public static (Tensor Loss, Tensor Logits, Tensor Labels) Loss(VlmModel model, Linear head, PretrainBatch batch, double hardShare = 1.0) =>
        Loss(model, head, model.EncodeImage(batch.Images).Last, batch, hardShare);

    /// <summary>As above, with the batch's image tokens [B, N, D] given (a frozen encoder's, read from a cache); batch.Images is not read.</summary>
    public static (Tensor Loss, Tensor Logits, Tensor Labels) Loss(VlmModel model, Linear head, Tensor imageTokens, PretrainBatch batch,
        double hardShare = 1.0)
    {
        var (first, second, labels) = Sample(model.ImageEmbedding(imageTokens).detach(), batch.Matches, hardShare);
        var text = model.EncodeText(batch.Ids, batch.Padding).Last;
        var logits = Logits(model, head, imageTokens, text, batch.Padding, first, second);
        return (functional.cross_entropy(logits, labels), logits, labels);
    }
}
