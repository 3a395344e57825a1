using EfficientVlm.Model.Data.Pipeline;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Metrics;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Tasks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Training;

/// <summary>
/// Task scores of a model on a split, with the official metrics. Run on the executor thread, in
/// eval mode, without grad; batches are collated on a background thread.
/// </summary>
public static class Evaluation
{
    public static double Vqa(VlmModel model, IReadOnlyList<VqaItem> items, Collate collate, IReadOnlyList<string> answerList,
        Device device, int k = 16, int batchSize = 64, ModelGates? gates = null) =>
        VqaAccuracy.Mean(VqaAnswers(model, items, collate, answerList, device, k, batchSize, gates).Zip(items, (p, i) => (p, i.Answers)));

    /// <summary>The answer chosen from <paramref name="answerList"/> for each question, in order.</summary>
    public static IReadOnlyList<string> VqaAnswers(VlmModel model, IReadOnlyList<VqaItem> items, Collate collate,
        IReadOnlyList<string> answerList, Device device, int k = 16, int batchSize = 64, ModelGates? gates = null)
    {
        using var _ = torch.no_grad();
        var (answerIds, answerPadding) = collate.Tokenizer.EncodeBatch(answerList, 16);
        using var ids = answerIds.to(device);
        using var pad = answerPadding.to(device);
        var predictions = new List<string>(items.Count);
        foreach (var batch in Batching.Prefetch(items, batchSize, 0, 0, collate.Vqa, shuffle: false))
        {
            using var scope = torch.NewDisposeScope();
            var (images, q, qp, _) = batch.ToTensors(device);
            var states = Tasks.Vqa.EncodeQuestion(model, images, q, qp, gates);
            var (best, _) = Tasks.Vqa.Rank(model, states, qp, ids, pad, k, gates);
            predictions.AddRange(best.cpu().data<long>().ToArray().Select(i => answerList[(int)i]));
        }
        return predictions;
    }

    public static double Nlvr(VlmModel model, IReadOnlyList<NlvrItem> items, Collate collate, Device device, int batchSize = 64,
        ModelGates? gates = null) =>
        ClassificationAccuracy.Accuracy(NlvrPredictions(model, items, collate, device, batchSize, gates), items.Select(i => i.Label).ToList());

    /// <summary>Whether the model holds each statement true, in order.</summary>
    public static IReadOnlyList<bool> NlvrPredictions(VlmModel model, IReadOnlyList<NlvrItem> items, Collate collate, Device device,
        int batchSize = 64, ModelGates? gates = null)
    {
        using var _ = torch.no_grad();
        var predicted = new List<bool>(items.Count);
        foreach (var batch in Batching.Prefetch(items, batchSize, 0, 0, collate.Nlvr, shuffle: false))
        {
            using var scope = torch.NewDisposeScope();
            var (left, right, ids, padding, _) = batch.ToTensors(device);
            var logits = Tasks.Nlvr.Logits(model, left, right, ids, padding, gates);
            predicted.AddRange(logits.argmax(1).cpu().data<long>().ToArray().Select(v => v == 1));
        }
        return predicted;
    }

    /// <summary>
    /// Text-assignment accuracy (percent) on image-caption pairs: each image's first caption in batches of
    /// <paramref name="batchSize"/>, pairs drawn as in training from a fixed seed, so every call scores
    /// the same pairs; the caller's torch RNG state is left as it was.
    /// </summary>
    public static double TextAssignment(VlmModel model, Linear head, IReadOnlyList<CaptionImage> images, Collate collate, Device device,
        int batchSize = 32, double hardShare = 1.0)
    {
        using var _ = torch.no_grad();
        using var saved = torch.get_rng_state();
        torch.manual_seed(12345);
        try
        {
            int correct = 0, total = 0;
            var pairs = images.Select(i => (i, i.Captions[0])).ToList();
            foreach (var batch in Batching.Prefetch(pairs, batchSize, 0, 0, p => collate.ImageText(p), shuffle: false))
            {
                if (batch.Ids.Length < Objectives.TextAssignment.MinImages) continue; // a last batch too small to draw two other images
                using var scope = torch.NewDisposeScope();
                var (_, logits, labels) = Objectives.TextAssignment.Loss(model, head, batch.ToTensors(device), hardShare);
                correct += (int)logits.argmax(1).eq(labels).sum().item<long>();
                total += (int)labels.shape[0];
            }
            return total == 0 ? double.NaN : 100.0 * correct / total;
        }
        finally
        {
            torch.set_rng_state(saved);
        }
    }

    /// <summary>
    /// Retrieval over a gallery of images and all their captions (COCO protocol); k = 0 ranks by ITC only, otherwise
    /// the ITC top k are rescored by <paramref name="score"/>.
    /// </summary>
    public static RetrievalRecall Retrieval(VlmModel model, IReadOnlyList<CaptionImage> images, Collate collate, Device device,
        int k = 16, int batchSize = 64, ModelGates? gates = null, Tasks.RetrievalScore score = Tasks.RetrievalScore.ItmPlusItc)
    {
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var pairs = images.SelectMany(i => i.Captions.Select(c => (i, c))).ToList();
        var owner = images.SelectMany((image, index) => image.Captions.Select(_ => index)).ToList();
        var imageTokens = new List<Tensor>();
        foreach (var batch in Batching.Prefetch(images, batchSize, 0, 0, b => collate.Images(b.Select(i => i.ImagePath).ToList()), shuffle: false))
        {
            using var batchScope = torch.NewDisposeScope();
            imageTokens.Add(model.EncodeImage(batch.ToTensor(device), gates).Last.MoveToOuterDisposeScope());
        }
        var textStates = new List<Tensor>();
        var rows = pairs.Select(p => collate.Tokenizer.Encode(p.c, model.Config.MaxTextLength)).ToList();
        var (allIds, allPadding) = Text.VlmTokenizer.Pad(rows, collate.Tokenizer.Special.Pad);
        allIds = allIds.to(device);
        allPadding = allPadding.to(device);
        for (int start = 0; start < rows.Count; start += 256)
        {
            using var batchScope = torch.NewDisposeScope();
            int n = Math.Min(256, rows.Count - start);
            textStates.Add(model.EncodeText(allIds.narrow(0, start, n), allPadding.narrow(0, start, n), gates).Last.MoveToOuterDisposeScope());
        }
        var gallery = new Tasks.Retrieval.Gallery(torch.cat(imageTokens, 0), torch.cat(textStates, 0), allPadding);
        var i2t = Tasks.Retrieval.RankTextsForImages(model, gallery, k, score, gates);
        var t2i = Tasks.Retrieval.RankImagesForTexts(model, gallery, k, score, gates);
        return RetrievalMetrics.Compute(i2t.Select(r => (IReadOnlyList<int>)r.Select(x => (int)x).ToList()).ToList(),
            t2i.Select(r => (IReadOnlyList<int>)r.Select(x => (int)x).ToList()).ToList(), owner);
    }

    /// <summary>Beam-search captions for each image, scored with BLEU-4 and CIDEr-D against its captions.</summary>
    public static (double Bleu4, double CiderD, IReadOnlyList<string> Captions) Captioning(VlmModel model, IReadOnlyList<CaptionImage> images,
        Collate collate, string prompt, Device device, BeamSettings beam, ModelGates? gates = null)
    {
        using var _ = torch.no_grad();
        var tokenizer = collate.Tokenizer;
        long[] promptIds = [tokenizer.Special.Cls, .. tokenizer.EncodeWithoutSpecials(prompt)];
        var generated = new List<string>();
        foreach (var batch in Batching.Prefetch(images, 32, 0, 0, b => collate.Images(b.Select(i => i.ImagePath).ToList()), shuffle: false))
        {
            using var scope = torch.NewDisposeScope();
            var tokens = model.EncodeImage(batch.ToTensor(device), gates).Last;
            for (int i = 0; i < batch.Count; i++)
                generated.Add(tokenizer.Decode(Tasks.Captioning.Generate(model, tokens.narrow(0, i, 1), promptIds, tokenizer.Special.Sep, beam, gates)));
        }
        var samples = images.Select((image, i) => new CaptionSample(CaptionMetrics.Tokenize(generated[i]),
            image.Captions.Select(CaptionMetrics.Tokenize).ToList())).ToList();
        return (CaptionMetrics.Bleu(samples).Bleu4, CaptionMetrics.CiderD(samples).Score, generated);
    }
}
