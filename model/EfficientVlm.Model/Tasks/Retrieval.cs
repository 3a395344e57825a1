using EfficientVlm.Model.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Tasks;

/// <summary>How the top k candidates of ITC are rescored.</summary>
public enum RetrievalScore
{
    /// <summary>X-VLM's rule: the ITM head's match logit alone.</summary>
    Itm,
    /// <summary>
    /// The ITM head's log-odds of a match plus the ITC logit (similarity / temperature): the rule of ALBEF and
    /// BLIP, with both heads in logit units. ITM judges whether a caption is true of an image; ITC also prefers
    /// the caption that was written for it over one that is true of many images (docs/training.md,
    /// "Retrieval: what the misses are").
    /// </summary>
    ItmPlusItc,
}

/// <summary>
/// Image-text retrieval (method.md section 2): ITC similarity picks the top k candidates, the ITM
/// head rescores them (<see cref="RetrievalScore"/>); candidates outside the top k rank below, in ITC order.
/// k = 0: ITC order only.
/// </summary>
public static class Retrieval
{
    /// <summary>Parses <c>itm</c> or <c>itm+itc</c>.</summary>
    public static RetrievalScore ParseScore(string name) => name.Trim().ToLowerInvariant() switch
    {
        "itm" => RetrievalScore.Itm,
        "itm+itc" => RetrievalScore.ItmPlusItc,
        _ => throw new ArgumentException($"Unknown retrieval score '{name}': use itm or itm+itc."),
    };

    /// <summary>A gallery already encoded once: image tokens [I, N, D], text states [T, L, D] with padding [T, L].</summary>
    public sealed record Gallery(Tensor ImageTokens, Tensor TextStates, Tensor TextPadding);

    /// <summary>For each image, text indices best first [I][T].</summary>
    public static long[][] RankTextsForImages(VlmModel model, Gallery gallery, int k,
        RetrievalScore score = RetrievalScore.ItmPlusItc, ModelGates? gates = null, int pairBatch = 256) =>
        Rank(model, gallery, k, score, gates, pairBatch, imagesAsQueries: true);

    /// <summary>For each text, image indices best first [T][I].</summary>
    public static long[][] RankImagesForTexts(VlmModel model, Gallery gallery, int k,
        RetrievalScore score = RetrievalScore.ItmPlusItc, ModelGates? gates = null, int pairBatch = 256) =>
        Rank(model, gallery, k, score, gates, pairBatch, imagesAsQueries: false);

    /// <param name="gates">The pruning masks of a model being pruned, for its fusion (the gallery was encoded under them).</param>
    private static long[][] Rank(VlmModel model, Gallery gallery, int k, RetrievalScore score, ModelGates? gates, int pairBatch, bool imagesAsQueries)
    {
        var sim = model.ImageEmbedding(gallery.ImageTokens).matmul(model.TextEmbedding(gallery.TextStates).t()); // (I, T)
        if (!imagesAsQueries) sim = sim.t();
        long queries = sim.shape[0], candidates = sim.shape[1];
        k = (int)Math.Min(k, candidates);
        var order = sim.argsort(1, descending: true);                                      // (Q, C) ITC order
        if (k == 0) return Rows(order.cpu());
        var top = order.narrow(1, 0, k);                                                    // (Q, K)
        var query = torch.arange(queries, device: sim.device).repeat_interleave(k);
        var candidate = top.reshape(-1);
        var image = imagesAsQueries ? query : candidate;
        var text = imagesAsQueries ? candidate : query;
        var scores = new List<Tensor>();
        for (long start = 0; start < image.shape[0]; start += pairBatch)
        {
            // one scope per batch: the fusion activations of a batch are freed before the next one
            using var batchScope = torch.NewDisposeScope();
            long n = Math.Min(pairBatch, image.shape[0] - start);
            var im = image.narrow(0, start, n);
            var tx = text.narrow(0, start, n);
            var fused = model.Fuse(gallery.TextStates.index_select(0, tx), gallery.TextPadding.index_select(0, tx),
                gallery.ImageTokens.index_select(0, im), gates).Last;
            var logits = model.ItmLogits(fused);                                           // (n, 2)
            var match = score == RetrievalScore.Itm ? logits.select(1, 1) : logits.select(1, 1) - logits.select(1, 0);
            scores.Add(match.MoveToOuterDisposeScope());
        }
        var rescored = torch.cat(scores, 0).view(queries, k);                              // (Q, K)
        if (score == RetrievalScore.ItmPlusItc) rescored = rescored + sim.gather(1, top).div(model.Temperature);
        var reordered = top.gather(1, rescored.argsort(1, descending: true));              // (Q, K) rescored
        return Rows(torch.cat([reordered, order.narrow(1, k, candidates - k)], 1).cpu());
    }

    private static long[][] Rows(Tensor ranking) =>
        Enumerable.Range(0, (int)ranking.shape[0]).Select(q => ranking[q].data<long>().ToArray()).ToArray();
}
