using EfficientVlm.Model.Modules;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Tasks;

/// <summary>Beam search settings (paper: beam 3, max 20, min 5).</summary>
public sealed record BeamSettings(int Beams = 3, int MaxTokens = 20, int MinTokens = 5);

/// <summary>
/// Captioning (method.md section 2): text and fusion layers run as one causal decoder (text layers
/// self-attention only, fusion layers with image cross-attention), the MLM head predicts the next
/// word piece. Input is [CLS] prompt caption [SEP]; the loss covers the caption and [SEP] only.
/// </summary>
public static class Captioning
{
    public const double LabelSmoothing = 0.1;

    /// <summary>image tokens [B, N, D], ids [B, T] -> next-token logits [B, T, V]</summary>
    public static Tensor NextTokenLogits(VlmModel model, Tensor imageTokens, Tensor ids, Tensor padding, ModelGates? gates = null) =>
        NextTokenLogitsStreams(model, imageTokens, ids, padding, gates, collect: false).Logits;

    /// <summary>As <see cref="NextTokenLogits"/>, with the text and fusion outputs (<paramref name="collect"/>: every state and attention map, for KD).</summary>
    public static (Tensor Logits, EncoderOutput Text, EncoderOutput Fusion) NextTokenLogitsStreams(VlmModel model, Tensor imageTokens, Tensor ids,
        Tensor padding, ModelGates? gates = null, bool collect = true)
    {
        var text = model.EncodeText(ids, padding, gates, collect, causal: true);
        var fused = model.Fuse(text.Last, padding, imageTokens, gates, collect, causal: true);
        return (model.LmLogits(fused.Last), text, fused);
    }

    /// <summary>
    /// The positions the loss covers and their targets: ids [B, T] -> mask [B, T-1] (real tokens at or
    /// after <paramref name="promptLength"/>) and targets [B, T-1] (-100 where not counted).
    /// </summary>
    public static (Tensor Mask, Tensor Targets) CaptionTargets(Tensor ids, Tensor padding, int promptLength)
    {
        long t = ids.shape[1];
        var positions = torch.arange(1, t, device: ids.device).view(1, -1);
        var mask = padding.narrow(1, 1, t - 1).gt(0).logical_and(positions.ge(promptLength));
        return (mask, ids.narrow(1, 1, t - 1).masked_fill(mask.logical_not(), -100));
    }

    /// <summary>Label-smoothed cross-entropy of predicted logits [B, T-1, V] against <see cref="CaptionTargets"/>.</summary>
    public static Tensor SmoothedLoss(Tensor predicted, Tensor targets) =>
        functional.cross_entropy(predicted.reshape(-1, predicted.shape[2]), targets.reshape(-1),
            ignore_index: -100, label_smoothing: LabelSmoothing);

    /// <summary>Label-smoothed next-token loss on positions at or after <paramref name="promptLength"/> (the caption).</summary>
    public static Tensor Loss(VlmModel model, Tensor images, Tensor ids, Tensor padding, int promptLength, ModelGates? gates = null) =>
        LossFromTokens(model, model.EncodeImage(images, gates).Last, ids, padding, promptLength, gates);

    /// <summary>As <see cref="Loss"/>, from each image's vision tokens [B, N, D] (a frozen encoder's, read from <c>VisionTokenCache</c>).</summary>
    public static Tensor LossFromTokens(VlmModel model, Tensor imageTokens, Tensor ids, Tensor padding, int promptLength, ModelGates? gates = null)
    {
        var logits = NextTokenLogits(model, imageTokens, ids, padding, gates);
        var (_, targets) = CaptionTargets(ids, padding, promptLength);
        return SmoothedLoss(logits.narrow(1, 0, ids.shape[1] - 1), targets);                // (B, T-1, V)
    }

    /// <summary>
    /// Beam search from a prompt ([CLS] prompt, no [SEP]) for one image tokens [1, N, D]. Stops a beam
    /// at <paramref name="endToken"/>, which is not allowed before <see cref="BeamSettings.MinTokens"/>
    /// new tokens. Scores are summed log-probabilities divided by the number of new tokens.
    /// Returns the new tokens of the best hypothesis (without the end token).
    /// </summary>
    public static long[] Generate(VlmModel model, Tensor imageTokens, long[] prompt, long endToken, BeamSettings settings,
        ModelGates? gates = null)
    {
        if (imageTokens.shape[0] != 1) throw new ArgumentException("Generate takes the tokens of one image [1, N, D].");
        return GenerateBatch(model, imageTokens, prompt, endToken, settings, gates)[0];
    }

    /// <summary>
    /// <see cref="Generate"/> for each of several images [B, N, D] at once: every step runs the live beams of all images as
    /// one batch (each beam reads its own image's tokens), and each image keeps its own beams, so the result is that of
    /// one search per image, in a B-th of the forward passes.
    /// </summary>
    public static long[][] GenerateBatch(VlmModel model, Tensor imageTokens, long[] prompt, long endToken, BeamSettings settings,
        ModelGates? gates = null)
    {
        int images = (int)imageTokens.shape[0];
        var device = imageTokens.device;
        var beams = Enumerable.Range(0, images).Select(_ => new List<(long[] Tokens, double Score)> { (prompt, 0.0) }).ToArray();
        var finished = Enumerable.Range(0, images).Select(_ => new List<(long[] Tokens, double Score)>()).ToArray();
        var searching = Enumerable.Repeat(true, images).ToArray();
        for (int step = 0; step < settings.MaxTokens && searching.Any(s => s); step++)
        {
            using var scope = torch.NewDisposeScope();
            // every live beam has the same length: the prompt and one token per step
            var rows = Enumerable.Range(0, images).Where(i => searching[i]).SelectMany(i => beams[i].Select(b => (Image: i, Beam: b))).ToList();
            int n = rows.Count, len = prompt.Length + step;
            var ids = torch.tensor(rows.SelectMany(r => r.Beam.Tokens).ToArray(), device: device).view(n, len);
            var owners = torch.tensor(rows.Select(r => (long)r.Image).ToArray(), device: device);
            var tokens = images == 1 ? imageTokens.expand(n, -1, -1) : imageTokens.index_select(0, owners);
            var logits = NextTokenLogits(model, tokens, ids, torch.ones_like(ids), gates);
            var logProbs = functional.log_softmax(logits.select(1, len - 1), -1);           // (n, V)
            if (step < settings.MinTokens) logProbs[TensorIndex.Colon, endToken] = torch.tensor(double.NegativeInfinity);
            var (values, indices) = logProbs.topk(settings.Beams, dim: 1);
            var v = values.cpu().data<float>().ToArray();
            var ix = indices.cpu().data<long>().ToArray();
            int row = 0;
            for (int i = 0; i < images; i++)
            {
                if (!searching[i]) continue;
                var candidates = new List<(long[] Tokens, double Score, bool End)>();
                foreach (var beam in beams[i])
                {
                    for (int j = 0; j < settings.Beams; j++)
                    {
                        var token = ix[row * settings.Beams + j];
                        candidates.Add(([.. beam.Tokens, token], beam.Score + v[row * settings.Beams + j], token == endToken));
                    }
                    row++;
                }
                beams[i] = [];
                foreach (var c in candidates.OrderByDescending(c => c.Score))
                {
                    if (double.IsNegativeInfinity(c.Score)) continue;
                    if (c.End) finished[i].Add((c.Tokens[..^1], c.Score / (c.Tokens.Length - prompt.Length)));
                    else if (beams[i].Count < settings.Beams) beams[i].Add((c.Tokens, c.Score));
                    if (beams[i].Count == settings.Beams) break;
                }
                if (finished[i].Count >= settings.Beams || beams[i].Count == 0) searching[i] = false;
            }
        }
        return Enumerable.Range(0, images).Select(i =>
        {
            var all = finished[i].Concat(beams[i].Select(b => (b.Tokens, Score: b.Score / Math.Max(1, b.Tokens.Length - prompt.Length))));
            return all.OrderByDescending(f => f.Score).First().Tokens[prompt.Length..];
        }).ToArray();
    }
}
