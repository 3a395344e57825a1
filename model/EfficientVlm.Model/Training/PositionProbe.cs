using EfficientVlm.Model.Data.ShapesWorld;
using EfficientVlm.Model.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Training;

/// <summary>A linear probe's held-out accuracy (0-100) and the majority-class share of the held-out labels (its chance level).</summary>
public sealed record ProbeScore(string Features, int Count, double Accuracy, double Majority);

/// <summary>
/// Where one fusion layer's cross-attention goes for "where" questions: the share (0-100) of its mass, averaged over
/// heads, question tokens and questions, on the asked-about object's patches, on any object's patches and on the
/// class token, next to the shares a uniform attention would give.
/// </summary>
public sealed record AttentionShare(int Layer, double Target, double Objects, double ClassToken, double UniformTarget,
    double UniformObjects, double UniformClassToken);

/// <summary>What <see cref="PositionProbe.Run"/> measured.</summary>
public sealed record PositionReport(IReadOnlyList<ProbeScore> Probes, IReadOnlyList<AttentionShare> Attention);

/// <summary>Softmax regression on frozen features: does a representation carry a property, linearly?</summary>
public static class LinearProbe
{
    /// <summary>
    /// Fits a linear classifier on standardised <paramref name="trainX"/> [N, D] with labels [N] (full batch, Adam,
    /// <paramref name="steps"/> steps), then scores it on [M, D] / [M]. Deterministic for a seed; leaves the caller's
    /// torch RNG state as it was.
    /// </summary>
    public static ProbeScore Fit(string features, Tensor trainX, Tensor trainY, Tensor testX, Tensor testY, int classes,
        int steps = 300, double lr = 1e-2, int seed = 0)
    {
        if (trainX.shape[0] == 0 || testX.shape[0] == 0) throw new ArgumentException($"The {features} probe has no examples to fit or to score.");
        using var saved = torch.get_rng_state();
        torch.manual_seed(seed);
        try
        {
            using var scope = torch.NewDisposeScope();
            using var grad = torch.enable_grad();
            var mean = trainX.mean([0]);
            var std = trainX.std(0).add(1e-5);
            var x = trainX.sub(mean).div(std);
            var probe = torch.nn.Linear(trainX.shape[1], classes, device: trainX.device);
            var optimizer = torch.optim.Adam(probe.parameters(), lr, weight_decay: 1e-4);
            for (int s = 0; s < steps; s++)
            {
                using var stepScope = torch.NewDisposeScope();
                optimizer.zero_grad();
                torch.nn.functional.cross_entropy(probe.forward(x), trainY).backward();
                optimizer.step();
            }
            using var noGrad = torch.no_grad();
            double accuracy = probe.forward(testX.sub(mean).div(std)).argmax(1).eq(testY).to(ScalarType.Float32).mean().item<float>();
            double majority = testY.bincount(null).max().item<long>() / (double)testY.shape[0];
            return new ProbeScore(features, (int)testY.shape[0], 100 * accuracy, 100 * majority);
        }
        finally
        {
            torch.set_rng_state(saved);
        }
    }
}

/// <summary>
/// Where position is lost (ShapesWorld "where is the ..." questions, docs/training.md): linear probes for the
/// 3 x 3 cell of (1) every image patch token out of the vision encoder, (2) the tokens of patches an object
/// covers, (3) the fused question states (class token and mean), for the answer's cell; and, on the test
/// questions, how much of each fusion layer's cross-attention lands on the asked-about object (the object
/// patches in the answer's cell). Run on the executor thread.
/// </summary>
public static class PositionProbe
{
    /// <summary>A patch counts as an object's when at least this share of its pixels is far from the image's median colour.</summary>
    public const double ObjectShare = 0.3;

    /// <summary>"Far": the channel-summed absolute difference, in normalised pixel units.</summary>
    public const double ObjectDistance = 0.6;

    public static PositionReport Run(VlmModel model, TaskData data, int trainQuestions, int testQuestions, Device device)
    {
        if (model.Config.Task == Config.VlmTask.Nlvr2)
            throw new ArgumentException("The position probe reads one image per input; an NLVR2 model fuses two. Probe its source model instead.");
        var train = Features(model, data, "train", trainQuestions, device, measureAttention: false);
        FeatureSets? test = null;
        try
        {
            test = Features(model, data, "test", testQuestions, device, measureAttention: true);
            return new PositionReport(
            [
                LinearProbe.Fit("patch tokens -> their cell", train.Patch.X, train.Patch.Y, test.Patch.X, test.Patch.Y, 9),
                LinearProbe.Fit("object patch tokens -> their cell", train.Object.X, train.Object.Y, test.Object.X, test.Object.Y, 9),
                LinearProbe.Fit("fused question -> answer cell", train.Fused.X, train.Fused.Y, test.Fused.X, test.Fused.Y, 9),
            ], test.Attention);
        }
        finally
        {
            foreach (var t in new[] { train, test }.OfType<FeatureSets>().SelectMany(f => new[] { f.Patch, f.Object, f.Fused })
                         .SelectMany(s => new[] { s.X, s.Y }))
                t.Dispose();
        }
    }

    /// <summary>The cell (row * 3 + column) a patch's centre falls in, for a grid of <paramref name="grid"/> x <paramref name="grid"/> patches.</summary>
    public static int CellOfPatch(int patch, int grid)
    {
        int Third(int i) => (int)Math.Floor(3 * (i + 0.5) / grid);
        return Third(patch / grid) * 3 + Third(patch % grid);
    }

    /// <summary>
    /// Which patches an object covers: normalised images [B, 3, H, W] -> [B, P] (row-major patches), true where at least
    /// <see cref="ObjectShare"/> of the patch's pixels are <see cref="ObjectDistance"/> or more from the image's median colour.
    /// </summary>
    public static Tensor ObjectPatches(Tensor images, int patch)
    {
        using var scope = torch.NewDisposeScope();
        long b = images.shape[0], rows = images.shape[2] / patch, columns = images.shape[3] / patch;
        var pixels = images.flatten(2);                                                           // (B, 3, H*W)
        var median = pixels.sort(2).Values.select(2, pixels.shape[2] / 2).unsqueeze(-1);
        return pixels.sub(median).abs().sum(1).gt(ObjectDistance).to(ScalarType.Float32)       // (B, H*W)
            .view(b, rows, patch, columns, patch).mean([2, 4]).flatten(1).ge(ObjectShare).MoveToOuterDisposeScope();
    }

    private sealed record Set(Tensor X, Tensor Y);

    private sealed record FeatureSets(Set Patch, Set Object, Set Fused, IReadOnlyList<AttentionShare> Attention);

    /// <param name="measureAttention">Also measure where the cross-attention goes (reported for the test questions only).</param>
    private static FeatureSets Features(VlmModel model, TaskData data, string split, int count, Device device, bool measureAttention)
    {
        var cells = Enumerable.Range(0, 9).Select(c => Language.CellName(c / 3, c % 3)).ToList();
        var items = data.Vqa(split).Where(q => q.Answers.Count > 0 && cells.Contains(q.Answers[0])).Take(count).ToList();
        if (items.Count == 0) throw new ArgumentException($"The {split} split has no ShapesWorld \"where\" questions to probe.");
        int grid = model.Config.ImageSize / model.Config.PatchSize, patch = model.Config.PatchSize;
        var patchLabels = torch.tensor(Enumerable.Range(0, grid * grid).Select(p => (long)CellOfPatch(p, grid)).ToArray());
        var patchX = new List<Tensor>(); var patchY = new List<Tensor>();
        var objectX = new List<Tensor>(); var objectY = new List<Tensor>();
        var fusedX = new List<Tensor>(); var fusedY = new List<long>();
        int layers = model.Config.FusionLayers, targeted = 0;
        var sums = new double[layers, 3];                       // per layer: target, objects, class token
        double uniformTarget = 0, uniformObjects = 0;
        using var _ = torch.no_grad();
        foreach (var chunk in items.Chunk(50))
        {
            using var scope = torch.NewDisposeScope();
            var (images, ids, padding, _) = data.Collate.Vqa(chunk).ToTensors(device);
            var image = model.EncodeImage(images).Last;                                             // (B, 1 + P, D)
            var tokens = image.narrow(1, 1, grid * grid).cpu();                                    // (B, P, D), no class token
            var fusion = model.Fuse(model.EncodeText(ids, padding).Last, padding, image, collect: measureAttention);
            var fused = fusion.Last.cpu();                                                         // (B, T, D)
            var mask = padding.cpu().to(ScalarType.Float32).unsqueeze(-1);
            fusedX.Add(torch.cat([fused.select(1, 0), fused.mul(mask).sum(1).div(mask.sum(1))], 1).MoveToOuterDisposeScope());
            var answerCells = chunk.Select(q => (long)cells.IndexOf(q.Answers[0])).ToArray();
            fusedY.AddRange(answerCells);

            var far = ObjectPatches(images.cpu(), patch);
            var labels = patchLabels.unsqueeze(0).expand(chunk.Length, -1);
            patchX.Add(tokens.flatten(0, 1).MoveToOuterDisposeScope());
            patchY.Add(labels.flatten().MoveToOuterDisposeScope());
            objectX.Add(tokens[far].MoveToOuterDisposeScope());
            objectY.Add(labels[far].MoveToOuterDisposeScope());
            if (!measureAttention) continue;

            // attention on the asked-about object: the object patches in the answer's cell, class token first
            var answerCell = torch.tensor(answerCells).unsqueeze(1);
            var noClass = torch.zeros(chunk.Length, 1, dtype: ScalarType.Bool);
            var target = torch.cat([noClass, far.logical_and(labels.eq(answerCell))], 1).to(ScalarType.Float32); // (B, S)
            var objects = torch.cat([noClass, far], 1).to(ScalarType.Float32);
            var found = target.sum(1).gt(0);                                                       // questions whose object was detected
            var weights = mask.squeeze(-1).div(mask.sum(1));                                       // (B, T)
            for (int l = 0; l < layers; l++)
            {
                if (fusion.CrossAttentions[l] is not { } probs) // a layer pruned of its cross-attention: nothing to measure
                {
                    sums[l, 0] = sums[l, 1] = sums[l, 2] = double.NaN;
                    continue;
                }
                var mass = probs.cpu().mean([1]).mul(weights.unsqueeze(-1)).sum(1);                     // (B, S)
                sums[l, 0] += mass.mul(target).sum(1)[found].sum().item<float>();
                sums[l, 1] += mass.mul(objects).sum(1)[found].sum().item<float>();
                sums[l, 2] += mass.select(1, 0)[found].sum().item<float>();
            }
            long s = target.shape[1];
            uniformTarget += target.sum(1)[found].sum().item<float>() / s;
            uniformObjects += objects.sum(1)[found].sum().item<float>() / s;
            targeted += (int)found.sum().item<long>();
        }
        patchLabels.Dispose();
        long sequence = grid * grid + 1;
        var attention = targeted == 0 ? [] : Enumerable.Range(0, layers).Select(l => new AttentionShare(l,
            100 * sums[l, 0] / targeted, 100 * sums[l, 1] / targeted, 100 * sums[l, 2] / targeted,
            100 * uniformTarget / targeted, 100 * uniformObjects / targeted, 100.0 / sequence)).ToList();
        return new FeatureSets(Concat(patchX, patchY), Concat(objectX, objectY), new Set(Cat(fusedX), torch.tensor(fusedY.ToArray())), attention);
    }

    private static Set Concat(List<Tensor> x, List<Tensor> y) => new(Cat(x), Cat(y));

    private static Tensor Cat(List<Tensor> parts)
    {
        var all = torch.cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return all;
    }
}
