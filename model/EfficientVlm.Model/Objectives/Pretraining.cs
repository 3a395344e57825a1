using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Objectives;

/// <summary>Every stream's states and attention maps of a pre-training pass (for distillation); the MLM streams are null without MLM.</summary>
public sealed record PretrainStreams(EncoderOutput Vision, EncoderOutput Text, EncoderOutput ItmFusion, Tensor ItmPadding,
    EncoderOutput? MlmText, EncoderOutput? MlmFusion);

/// <summary>The three pre-training losses and what was sampled for them (so a teacher can be scored on the same).</summary>
public sealed record PretrainResult(
    Tensor Itc, Tensor Itm, Tensor Mlm,
    Tensor ItmLogits, Tensor MlmLogits,
    Tensor NegativeTextForImage, Tensor NegativeImageForText,
    Tensor MaskedIds, Tensor MaskedPositions, Tensor MaskedTargets,
    PretrainStreams? Streams = null)
{
    /// <summary>ITC + ITM + MLM.</summary>
    public Tensor Total => Itc.add(Itm).add(Mlm);
}

/// <summary>Choices made before the forward pass (negatives, masks), shared by a student and its teacher.</summary>
public sealed record PretrainSamples(Tensor NegativeTextForImage, Tensor NegativeImageForText,
    Tensor MaskedIds, Tensor MaskedPositions, Tensor MaskedTargets);

/// <summary>ITC, ITM with hard negatives, and MLM (method.md section 2), as functions of a model and a batch.</summary>
public static class Pretraining
{
    public const double MaskProbability = 0.25;
    public const int MaxMasks = 8;

    /// <summary>
    /// Symmetric contrastive loss over the batch: sim = img · txtᵀ / temp; every pair of the same image
    /// is a positive (targets spread evenly over them). img, txt [B, E] (L2-normalised) -> scalar.
    /// Texts that merely match another image (<see cref="PretrainBatch.Matches"/>) stay negatives here:
    /// spreading the target over them pulled images towards the generic captions and halved validation
    /// retrieval after 250 steps (docs/training.md).
    /// </summary>
    /// <param name="editedEmb">[B, E] edited captions (<see cref="PretrainBatch.EditedIds"/>): more texts for the images to tell from their own.</param>
    public static Tensor ItcLoss(Tensor imageEmb, Tensor textEmb, Tensor temperature, Tensor imageIds, Tensor? editedEmb = null)
    {
        var sim = imageEmb.matmul(textEmb.t()).div(temperature);                           // (B, B)
        var positives = PretrainBatch.SameImage(imageIds).to(sim.dtype);                   // (B, B)
        var targets = positives.div(positives.sum(1, keepdim: true));
        var i2tSim = editedEmb is null ? sim : torch.cat([sim, imageEmb.matmul(editedEmb.t()).div(temperature)], 1);  // (B, B [+ B])
        var i2tTargets = editedEmb is null ? targets : torch.cat([targets, torch.zeros_like(targets)], 1);
        var i2t = functional.log_softmax(i2tSim, 1).mul(i2tTargets).sum(1).mean().neg();
        var t2i = functional.log_softmax(sim.t(), 1).mul(targets).sum(1).mean().neg();
        return i2t.add(t2i).div(2);
    }

    /// <summary>
    /// For each image one hard negative text, and for each text one hard negative image, drawn from
    /// softmax(similarity) with matched pairs excluded (matches [B, B], image i, text j). Returns
    /// indices [B] each. When a row has nothing unmatched, it falls back to the next index.
    /// With <paramref name="hardShare"/> below 1 the draw is from hardShare * that + (1 - hardShare) * uniform
    /// over the unmatched: some negatives are easy ones (for models trained from scratch; 1 is the method).
    /// </summary>
    public static (Tensor TextForImage, Tensor ImageForText) SampleHardNegatives(Tensor imageEmb, Tensor textEmb,
        Tensor temperature, Tensor matches, double hardShare = 1.0)
    {
        using var _ = torch.no_grad();
        var sim = imageEmb.matmul(textEmb.t()).div(temperature);                           // (B, B)
        long b = sim.shape[0];
        Tensor Draw(Tensor scores, Tensor matched)
        {
            var open = matched.logical_not().to(ScalarType.Float32);                          // the unmatched candidates
            var weights = DrawWeights(scores, open, hardShare);
            var rowHasNegative = open.sum(1).gt(0);
            var fallback = torch.arange(b, device: sim.device).add(1).remainder(b);
            var safe = torch.where(rowHasNegative.view(-1, 1), weights, torch.ones_like(weights));
            return torch.where(rowHasNegative, torch.multinomial(safe, 1).view(-1), fallback);
        }
        return (Draw(sim, matches), Draw(sim.t(), matches.t()));
    }

    /// <summary>
    /// Row weights for drawing negatives: softmax(scores) restricted to the open entries (open [R, C], 1 or 0),
    /// mixed as hardShare * that + (1 - hardShare) * uniform over the open entries. 1e-12 on every open entry
    /// keeps a row drawable when its similarities underflow. Rows need not sum to 1 (multinomial normalises).
    /// </summary>
    public static Tensor DrawWeights(Tensor scores, Tensor open, double hardShare)
    {
        CheckHardShare(hardShare);
        var weights = functional.softmax(scores.to(ScalarType.Float32), 1).mul(open).add(open.mul(1e-12));
        if (hardShare < 1)
            weights = weights.div(weights.sum(1, keepdim: true).clamp_min(1e-30)).mul(hardShare)
                .add(open.div(open.sum(1, keepdim: true).clamp_min(1)).mul(1 - hardShare));
        return weights;
    }

    /// <summary>The share of similarity-drawn (hard) candidates, checked: it must be in [0, 1].</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside [0, 1] or NaN.</exception>
    public static double CheckHardShare(double hardShare) =>
        hardShare is >= 0 and <= 1 ? hardShare
            : throw new ArgumentOutOfRangeException(nameof(hardShare), hardShare, "The share of hard negatives must be in [0, 1].");

    /// <summary>
    /// BERT-style masking: each ordinary token with probability 0.25, at most 8 per text; of those,
    /// 80% become [MASK], 10% a random word piece, 10% stay. Returns the masked ids [B, T], and the
    /// flat positions [M] (into B*T) with their original ids [M].
    /// </summary>
    public static (Tensor MaskedIds, Tensor Positions, Tensor Targets) MaskTokens(Tensor ids, Tensor padding, SpecialTokens tokens)
    {
        using var _ = torch.no_grad();
        var ordinary = padding.gt(0).logical_and(ids.ne(tokens.Cls)).logical_and(ids.ne(tokens.Sep)).logical_and(ids.ne(tokens.Pad));
        var draw = torch.rand(ids.shape, device: ids.device);
        var chosen = draw.lt(MaskProbability).logical_and(ordinary);
        // keep at most MaxMasks per row: rank the chosen by their draw and drop the rest
        var rank = draw.masked_fill(chosen.logical_not(), 2.0).argsort(1).argsort(1);
        chosen = chosen.logical_and(rank.lt(MaxMasks));
        // guarantee one mask per text that has any ordinary token, so every row teaches something
        var none = chosen.sum(1).eq(0).logical_and(ordinary.sum(1).gt(0));
        var first = draw.masked_fill(ordinary.logical_not(), 2.0).argmin(1);
        chosen = chosen.logical_or(functional.one_hot(first, ids.shape[1]).to(ScalarType.Bool).logical_and(none.view(-1, 1)));

        var masked = ids.clone();
        var action = torch.rand(ids.shape, device: ids.device);
        masked = torch.where(chosen.logical_and(action.lt(0.8)), torch.full_like(ids, tokens.Mask), masked);
        var random = torch.randint(5, tokens.VocabSize, ids.shape, device: ids.device);
        masked = torch.where(chosen.logical_and(action.ge(0.8)).logical_and(action.lt(0.9)), random, masked);
        var positions = chosen.flatten().nonzero().view(-1);
        return (masked, positions, ids.flatten().index_select(0, positions));
    }

    /// <summary>Draws the negatives and masks of a batch (from the given model's ITC similarities).</summary>
    public static PretrainSamples Sample(VlmModel model, PretrainBatch batch, SpecialTokens tokens)
    {
        using var _ = torch.no_grad();
        var image = model.EncodeImage(batch.Images).Last;
        var text = model.EncodeText(batch.Ids, batch.Padding).Last;
        var (negText, negImage) = SampleHardNegatives(model.ImageEmbedding(image), model.TextEmbedding(text),
            model.Temperature, batch.Matches);
        var (maskedIds, positions, targets) = MaskTokens(batch.Ids, batch.Padding, tokens);
        return new PretrainSamples(negText, negImage, maskedIds, positions, targets);
    }

    /// <summary>Runs the three objectives. With <paramref name="samples"/> given (a teacher's), uses them; else draws its own.</summary>
    /// <param name="collect">Keep every hidden state and attention map (distillation).</param>
    /// <param name="withMlm">Run the MLM pass (retrieval fine-tuning trains ITC + ITM only).</param>
    /// <param name="hardShare">Share of the ITM negatives drawn by similarity when this call draws them (see <see cref="SampleHardNegatives"/>).</param>
    /// <param name="visionTokens">
    /// The batch's vision tokens [B, N, D] from a frozen encoder (<c>VisionTokenCache</c>) instead of its pixels, which are then
    /// not read; not with <paramref name="collect"/>.
    /// </param>
    public static PretrainResult Run(VlmModel model, PretrainBatch batch, SpecialTokens tokens,
        PretrainSamples? samples = null, ModelGates? gates = null, bool collect = false, bool withMlm = true, double hardShare = 1.0,
        Tensor? visionTokens = null)
    {
        if (visionTokens is not null && collect) throw new ArgumentException("Cached vision tokens carry no hidden states or attention maps to collect.");
        if (visionTokens is not null && (gates?.Vision is not null || gates?.Stem is not null))
            throw new ArgumentException("Cached vision tokens cannot be gated: the vision encoder's gates would be ignored.");
        var vision = visionTokens is null ? model.EncodeImage(batch.Images, gates, collect) : null;
        var text = model.EncodeText(batch.Ids, batch.Padding, gates, collect);
        var imageTokens = visionTokens ?? vision!.Last;                                       // (B, N, D)
        var textStates = text.Last;                                                           // (B, T, D)
        var imageEmb = model.ImageEmbedding(imageTokens);
        var textEmb = model.TextEmbedding(textStates);
        var edited = batch.EditedIds is null ? null : model.EncodeText(batch.EditedIds, batch.EditedPadding!, gates).Last;   // (B, T', D)
        var itc = ItcLoss(imageEmb, textEmb, model.Temperature, batch.ImageIds, edited is null ? null : model.TextEmbedding(edited));

        Tensor negText, negImage, maskedIds, positions, targets;
        if (samples is null)
        {
            (negText, negImage) = SampleHardNegatives(imageEmb.detach(), textEmb.detach(), model.Temperature.detach(), batch.Matches, hardShare);
            (maskedIds, positions, targets) = MaskTokens(batch.Ids, batch.Padding, tokens);
        }
        else
        {
            (negText, negImage, maskedIds, positions, targets) =
                (samples.NegativeTextForImage, samples.NegativeImageForText, samples.MaskedIds, samples.MaskedPositions, samples.MaskedTargets);
        }

        // ITM over 3B pairs: (image, its text), (image, hard negative text), (hard negative image, text)
        var pairImages = torch.cat([imageTokens, imageTokens, imageTokens.index_select(0, negImage)], 0);
        var pairText = torch.cat([textStates, textStates.index_select(0, negText), textStates], 0);
        var pairPadding = torch.cat([batch.Padding, batch.Padding.index_select(0, negText), batch.Padding], 0);
        var itmFusion = model.Fuse(pairText, pairPadding, pairImages, gates, collect);
        var itmLogits = model.ItmLogits(itmFusion.Last);                                      // (3B, 2)
        long b = batch.Ids.shape[0];
        var labels = torch.cat([torch.ones(b, dtype: ScalarType.Int64, device: itmLogits.device),
            torch.zeros(2 * b, dtype: ScalarType.Int64, device: itmLogits.device)], 0);
        var itm = functional.cross_entropy(itmLogits, labels);
        if (edited is not null)
        {
            // and B more: (image, its caption edited); weighted as one of the three kinds of pair above
            var editedLogits = model.ItmLogits(model.Fuse(edited, batch.EditedPadding!, imageTokens, gates).Last);   // (B, 2)
            var editedItm = functional.cross_entropy(editedLogits, torch.zeros(b, dtype: ScalarType.Int64, device: itmLogits.device));
            itm = itm.mul(Scalars.Of(0.75)).add(editedItm, Scalars.Of(0.25));
        }

        if (!withMlm)
        {
            var none = torch.zeros(1, model.Config.VocabSize, device: itm.device);
            return new PretrainResult(itc, itm, torch.zeros_like(itm), itmLogits, none, negText, negImage, maskedIds, positions, targets,
                collect ? new PretrainStreams(vision!, text, itmFusion, pairPadding, null, null) : null);
        }

        // MLM: masked text through text and fusion layers, logits at masked positions only
        var mlmText = model.EncodeText(maskedIds, batch.Padding, gates, collect);
        var mlmFusion = model.Fuse(mlmText.Last, batch.Padding, imageTokens, gates, collect);  // (B, T, D)
        var states = mlmFusion.Last.reshape(-1, mlmFusion.Last.shape[2]).index_select(0, positions); // (M, D)
        var mlmLogits = model.LmLogits(states);                                               // (M, V)
        var mlm = functional.cross_entropy(mlmLogits, targets);

        var streams = collect ? new PretrainStreams(vision!, text, itmFusion, pairPadding, mlmText, mlmFusion) : null;
        return new PretrainResult(itc, itm, mlm, itmLogits, mlmLogits, negText, negImage, maskedIds, positions, targets, streams);
    }
}
