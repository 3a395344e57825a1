using EfficientVlm.Model.Data.Pipeline;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Data.ShapesWorld;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Objectives;
using EfficientVlm.Model.Tasks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Training;

/// <summary>Common parts of the stages: data, batch size, seed, validation subset size.</summary>
public abstract class StageBase<TBatch>(VlmModel model, TaskData data, int batchSize, int seed, ISet<string>? fresh = null) : ITrainingStage<TBatch>
{
    public VlmModel Model => model;
    protected TaskData Data => data;
    protected int Seed => seed;
    protected int BatchSize => batchSize;

    public virtual IEnumerable<(IEnumerable<Parameter> Parameters, double LrMultiplier, bool Decay)> ParameterGroups() =>
        Training.ParameterGroups.For(model, fresh);

    public abstract int BatchesPerEpoch { get; }

    public abstract IEnumerable<TBatch> Batches(int epoch, int skip);

    public abstract StepLoss Loss(TBatch batch, Device device, int step);

    public virtual void AfterStep() => model.ClampTemperature();

    public abstract double Validate(Device device);

    public virtual void SaveState(string folder) { }

    public virtual void LoadState(string folder) { }

    protected static int Count(int items, int batch) => (items + batch - 1) / batch;

    /// <summary>Writes the weights of a head the stage owns (saved with the resumable checkpoint, not with the model).</summary>
    protected static void SaveHead(torch.nn.Module head, string file) => Checkpoints.Checkpoint.SaveStateDict(head, file);

    /// <summary>Reads what <see cref="SaveHead"/> wrote into <paramref name="head"/>.</summary>
    protected static void LoadHead(torch.nn.Module head, string file)
    {
        using var scope = torch.NewDisposeScope();
        var state = TorchSharp.PyBridge.Safetensors.LoadStateDict(file);
        using (torch.no_grad())
            foreach (var (name, tensor) in head.state_dict()) tensor.copy_(state[name]);
    }

    /// <summary>Batches of an epoch collated in the background, from <paramref name="skip"/> on.</summary>
    protected IEnumerable<TBatch> Prefetched<T>(IReadOnlyList<T> items, int epoch, int skip, Func<IReadOnlyList<T>, TBatch> collate) =>
        Batching.Prefetch(Batching.Shuffle(items, seed, epoch).Skip(skip * batchSize).ToList(), batchSize, seed, epoch, collate, shuffle: false);
}

/// <summary>
/// Stages that train on (image, caption) pairs: every train image once per epoch, with a caption chosen by the epoch.
/// With <c>cacheVision</c> (the vision encoder frozen) the train images' tokens are encoded once, or read from
/// <c>cacheFolder</c>, and a subclass gathers them from <see cref="Tokens"/> instead of decoding and encoding the images.
/// </summary>
public abstract class CaptionPairStage<TBatch>(VlmModel model, TaskData data, int batchSize, int seed, bool cacheVision = false,
    string? cacheFolder = null)
    : StageBase<TBatch>(model, data, batchSize, seed), IDisposable
{
    /// <summary>The frozen encoder's tokens of the train images; null without the cache.</summary>
    protected CaptionImageTokens? Tokens { get; } = cacheVision ? new CaptionImageTokens(model, data, cacheFolder) : null;

    /// <summary>The distinct train images whose tokens the stage holds (0 without the cache).</summary>
    public int CachedImages => Tokens?.Count ?? 0;

    /// <summary>Whether the tokens came from the cache folder (after the first step).</summary>
    public bool TokensRead => Tokens?.WasRead ?? false;

    public virtual void Dispose() => Tokens?.Dispose();

    public override int BatchesPerEpoch => Count(Data.Captions("train").Count, BatchSize);

    public override IEnumerable<TBatch> Batches(int epoch, int skip) =>
        Prefetched(Data.CaptionPairs("train", Seed, epoch), epoch, skip, Collate);

    protected abstract TBatch Collate(IReadOnlyList<(CaptionImage Image, string Caption)> pairs);
}

/// <summary>
/// Teacher pre-training: ITC + ITM (hard negatives) + MLM on image-caption pairs; validated by ITC
/// retrieval on val. <paramref name="hardShare"/> below 1 mixes easy ITM negatives in (docs/training.md).
/// </summary>
public sealed class PretrainStage(VlmModel model, TaskData data, int batchSize, int seed, double hardShare = 1.0)
    : CaptionPairStage<ImageTextBatchData>(model, data, batchSize, seed)
{
    protected override ImageTextBatchData Collate(IReadOnlyList<(CaptionImage Image, string Caption)> pairs) => Data.Collate.ImageText(pairs);

    public override StepLoss Loss(ImageTextBatchData batch, Device device, int step)
    {
        var r = Pretraining.Run(Model, batch.ToTensors(device), Data.Tokenizer.Special, hardShare: hardShare);
        return new StepLoss(r.Total, new Dictionary<string, Tensor> { ["itc"] = r.Itc, ["itm"] = r.Itm, ["mlm"] = r.Mlm });
    }

    public override double Validate(Device device) => Evaluation.Retrieval(Model, Data.Captions("val"), Data.Collate, device, k: 0).Mean;
}

/// <summary>
/// NLVR2 domain pre-training by text assignment (<see cref="TextAssignment"/>), on image-caption pairs,
/// for a model already converted to NLVR2 (doubled fusion stack). The 3-way head belongs to this stage:
/// it is saved with the resumable checkpoint and dropped afterwards; the model's own NLVR2 head is not
/// trained here. Validated by text-assignment accuracy on val, with pairs drawn as in training.
/// <paramref name="hardShare"/> below 1 mixes uniformly drawn other images into the pairs.
/// </summary>
public sealed class TextAssignmentStage : CaptionPairStage<ImageTextBatchData>, IDisposable
{
    private const string HeadFile = "text-assignment-head.safetensors";
    private readonly Linear _head;
    private readonly double _hardShare;

    /// <param name="cacheVision">
    /// With the vision encoder frozen: every train image encoded once, at the first step, and its tokens read from memory
    /// (and from <paramref name="cacheFolder"/> when given) instead of decoded and encoded at every step (<see cref="VisionTokenCache"/>).
    /// </param>
    public TextAssignmentStage(VlmModel model, TaskData data, int batchSize, int seed, double hardShare = 1.0, bool cacheVision = false,
        string? cacheFolder = null) : base(model, data, batchSize, seed, cacheVision, cacheFolder)
    {
        if (model.Config.Task != Config.VlmTask.Nlvr2) throw new ArgumentException("Text assignment trains a model converted to NLVR2 (doubled fusion stack).");
        if (batchSize < TextAssignment.MinImages) throw new ArgumentException($"Text assignment needs batches of at least {TextAssignment.MinImages} images.");
        _hardShare = Pretraining.CheckHardShare(hardShare);
        var device = model.parameters().First().device;
        _head = Runtime.Scopes.Keep(torch.nn.Linear(model.Config.Hidden, TextAssignment.Classes, device: device));
    }

    protected override ImageTextBatchData Collate(IReadOnlyList<(CaptionImage Image, string Caption)> pairs) =>
        Data.Collate.ImageText(pairs, pixels: Tokens is null);

    /// <summary>Every full batch, and the last one only when it has the images a draw needs.</summary>
    public override int BatchesPerEpoch
    {
        get
        {
            int images = Data.Captions("train").Count;
            return images / BatchSize + (images % BatchSize >= TextAssignment.MinImages ? 1 : 0);
        }
    }

    public override IEnumerable<ImageTextBatchData> Batches(int epoch, int skip) =>
        base.Batches(epoch, skip).Where(b => b.Ids.Length >= TextAssignment.MinImages);

    /// <summary>The model's groups, and the new head at twice the rate (weights decay, bias does not).</summary>
    public override IEnumerable<(IEnumerable<Parameter> Parameters, double LrMultiplier, bool Decay)> ParameterGroups() =>
        base.ParameterGroups().Concat([([_head.weight!], 2.0, true), ([_head.bias!], 2.0, false)]);

    public override StepLoss Loss(ImageTextBatchData batch, Device device, int step)
    {
        var tensors = batch.ToTensors(device);
        var (loss, _, _) = Tokens is null
            ? TextAssignment.Loss(Model, _head, tensors, _hardShare)
            : TextAssignment.Loss(Model, _head, Tokens.Gather(batch.ImageIds, device), tensors, _hardShare);
        return new StepLoss(loss, new Dictionary<string, Tensor> { ["ta"] = loss });
    }

    public override double Validate(Device device) =>
        Evaluation.TextAssignment(Model, _head, Data.Captions("val"), Data.Collate, device, BatchSize, _hardShare);

    public override void SaveState(string folder) => SaveHead(_head, Path.Combine(folder, HeadFile));

    public override void LoadState(string folder) => LoadHead(_head, Path.Combine(folder, HeadFile));

    public override void Dispose()
    {
        _head.Dispose();
        base.Dispose();
    }
}

/// <summary>
/// General distillation (method.md section 3): L = 0.6 (ITC + ITM + MLM) + 0.4 L_kd with the frozen
/// teacher in eval mode scored on the same negatives and masks as the student.
/// </summary>
public sealed class DistillStage(VlmModel teacher, VlmModel student, TaskData data, int batchSize, int seed)
    : CaptionPairStage<ImageTextBatchData>(student, data, batchSize, seed)
{
    protected override ImageTextBatchData Collate(IReadOnlyList<(CaptionImage Image, string Caption)> pairs) => Data.Collate.ImageText(pairs);

    public override StepLoss Loss(ImageTextBatchData batch, Device device, int step)
    {
        var tensors = batch.ToTensors(device);
        teacher.eval();
        PretrainSamples samples;
        PretrainResult fromTeacher;
        using (torch.no_grad())
        {
            samples = Pretraining.Sample(teacher, tensors, Data.Tokenizer.Special);
            fromTeacher = Pretraining.Run(teacher, tensors, Data.Tokenizer.Special, samples, collect: true);
        }
        var fromStudent = Pretraining.Run(Model, tensors, Data.Tokenizer.Special, samples, collect: true);
        var (kd, parts) = Distillation.GeneralKd(fromStudent, fromTeacher, tensors.Padding);
        var total = fromStudent.Total.mul(0.6).add(kd.mul(0.4));
        parts["itc"] = fromStudent.Itc;
        parts["itm"] = fromStudent.Itm;
        parts["mlm"] = fromStudent.Mlm;
        return new StepLoss(total, parts);
    }

    public override double Validate(Device device) => Evaluation.Retrieval(Model, Data.Captions("val"), Data.Collate, device, k: 0).Mean;
}

/// <summary>VQA fine-tuning: weighted answer likelihood through the answer decoder; validated by VQA accuracy on val.</summary>
public sealed class VqaStage(VlmModel model, TaskData data, int batchSize, int seed, ISet<string>? fresh = null)
    : StageBase<VqaBatchData>(model, data, batchSize, seed, fresh)
{
    public override int BatchesPerEpoch => Count(Data.Vqa("train").Count, BatchSize);

    public override IEnumerable<VqaBatchData> Batches(int epoch, int skip) => Prefetched(Data.Vqa("train"), epoch, skip, Data.Collate.Vqa);

    public override StepLoss Loss(VqaBatchData batch, Device device, int step)
    {
        var (images, ids, padding, answers) = batch.ToTensors(device);
        var loss = Vqa.Loss(Model, images, ids, padding, answers);
        return new StepLoss(loss, new Dictionary<string, Tensor> { ["vqa"] = loss });
    }

    public override double Validate(Device device) => Evaluation.Vqa(Model, Data.Vqa("val"), Data.Collate, Data.AnswerList, device);
}

/// <summary>
/// NLVR2 fine-tuning: cross-entropy on the doubled-fusion classifier; validated by accuracy on val.
/// <paramref name="repeats"/> puts each training pair of a ShapesWorld statement family in every epoch that many
/// times (a family the model learns slowly, docs/training.md); pairs of other families, and statements no template
/// writes, once.
/// </summary>
public sealed class NlvrStage(VlmModel model, TaskData data, int batchSize, int seed, ISet<string>? fresh = null,
    IReadOnlyDictionary<Statements.Family, int>? repeats = null)
    : StageBase<NlvrBatchData>(model, data, batchSize, seed, fresh)
{
    private IReadOnlyList<NlvrItem>? _train;

    private IReadOnlyList<NlvrItem> Train => _train ??= WithRepeats(Data.Nlvr("train"), repeats);

    /// <summary>Each item as many times as its family's repeat count (1 when not given).</summary>
    public static IReadOnlyList<NlvrItem> WithRepeats(IReadOnlyList<NlvrItem> items, IReadOnlyDictionary<Statements.Family, int>? repeats)
    {
        if (repeats is null || repeats.Count == 0) return items;
        if (repeats.Values.Any(n => n < 1)) throw new ArgumentException("A family's repeat count must be 1 or more.");
        return items.SelectMany(item => Enumerable.Repeat(item,
            Statements.FamilyOf(item.Sentence) is { } family && repeats.TryGetValue(family, out var n) ? n : 1)).ToList();
    }

    public override int BatchesPerEpoch => Count(Train.Count, BatchSize);

    public override IEnumerable<NlvrBatchData> Batches(int epoch, int skip) => Prefetched(Train, epoch, skip, Data.Collate.Nlvr);

    public override StepLoss Loss(NlvrBatchData batch, Device device, int step)
    {
        var (left, right, ids, padding, labels) = batch.ToTensors(device);
        var loss = Nlvr.Loss(Model, left, right, ids, padding, labels);
        return new StepLoss(loss, new Dictionary<string, Tensor> { ["nlvr"] = loss });
    }

    public override double Validate(Device device) => Evaluation.Nlvr(Model, Data.Nlvr("val"), Data.Collate, device);
}

/// <summary>
/// NLVR2 fine-tuning with the vision encoder frozen, both images' vision tokens read from a <see cref="VisionTokenCache"/>
/// (every train image encoded once, at the first step, or read from the cache folder) instead of decoded and encoded at
/// every step; otherwise as
/// <see cref="NlvrStage"/>: the same pairs in the same order, the same loss, the same validation (which encodes val images).
/// </summary>
public sealed class CachedNlvrStage : StageBase<NlvrTokenBatchData>, IDisposable
{
    private readonly IReadOnlyList<NlvrItem> _train;
    private readonly VisionTokenCache _cache;

    /// <param name="cacheFolder">Where the tokens are also kept on disk, for a later stage with the same frozen encoder.</param>
    public CachedNlvrStage(VlmModel model, TaskData data, int batchSize, int seed, ISet<string>? fresh = null,
        IReadOnlyDictionary<Statements.Family, int>? repeats = null, string? cacheFolder = null) : base(model, data, batchSize, seed, fresh)
    {
        _train = NlvrStage.WithRepeats(data.Nlvr("train"), repeats);
        _cache = new VisionTokenCache(model, data.Collate, _train.SelectMany(i => new[] { i.LeftImage, i.RightImage }), cacheFolder);
    }

    /// <summary>The distinct train images whose tokens the stage holds.</summary>
    public int CachedImages => _cache.Count;

    /// <summary>Whether the tokens came from the cache folder (after the first step).</summary>
    public bool TokensRead => _cache.WasRead;

    public override int BatchesPerEpoch => Count(_train.Count, BatchSize);

    public override IEnumerable<NlvrTokenBatchData> Batches(int epoch, int skip) =>
        Prefetched(_train, epoch, skip, items => Data.Collate.NlvrTokens(items, _cache.IndexOf));

    public override StepLoss Loss(NlvrTokenBatchData batch, Device device, int step)
    {
        var (ids, padding, labels) = batch.ToTensors(device);
        var left = _cache.Gather(batch.Left, device);
        var right = _cache.Gather(batch.Right, device);
        var loss = torch.nn.functional.cross_entropy(Nlvr.LogitsFromTokens(Model, left, right, ids, padding), labels);
        return new StepLoss(loss, new Dictionary<string, Tensor> { ["nlvr"] = loss });
    }

    public override double Validate(Device device) => Evaluation.Nlvr(Model, Data.Nlvr("val"), Data.Collate, device);

    public void Dispose() => _cache.Dispose();
}

/// <summary>
/// Retrieval fine-tuning: ITC + ITM with hard negatives; validated by the mean of R@1/5/10 both ways (ITC top-16, ITM rescoring).
/// With <paramref name="negatives"/>, each caption's edited copy is one more negative for both (<see cref="CaptionNegatives"/>).
/// With <paramref name="sameTextNegatives"/>, a caption of another image is an ITM negative even when its text equals one
/// of the image's own (X-VLM's rule: only the image's own captions are left out of the draw), so ITM learns which image
/// a caption was written for, not only whether it is true of it.
/// </summary>
public sealed class RetrievalStage(VlmModel model, TaskData data, int batchSize, int seed, CaptionNegatives? negatives = null,
    bool sameTextNegatives = false, bool cacheVision = false, string? cacheFolder = null)
    : CaptionPairStage<ImageTextBatchData>(model, data, batchSize, seed, cacheVision, cacheFolder)
{
    protected override ImageTextBatchData Collate(IReadOnlyList<(CaptionImage Image, string Caption)> pairs) =>
        Data.Collate.ImageText(pairs, negatives, Seed, pixels: Tokens is null);

    public override StepLoss Loss(ImageTextBatchData batch, Device device, int step)
    {
        var tensors = batch.ToTensors(device);
        if (sameTextNegatives) tensors = tensors with { Matches = PretrainBatch.SameImage(tensors.ImageIds) };
        var r = Pretraining.Run(Model, tensors, Data.Tokenizer.Special, withMlm: false, visionTokens: Tokens?.Gather(batch.ImageIds, device));
        return new StepLoss(r.Itc.add(r.Itm), new Dictionary<string, Tensor> { ["itc"] = r.Itc, ["itm"] = r.Itm });
    }

    public override double Validate(Device device) => Evaluation.Retrieval(Model, Data.Captions("val"), Data.Collate, device, k: 16).Mean;
}

/// <summary>Captioning fine-tuning: label-smoothed next-token loss after the prompt; validated by CIDEr-D on val (greedy).</summary>
public sealed class CaptionStage(VlmModel model, TaskData data, int batchSize, int seed, int validationImages = 200, bool cacheVision = false,
    string? cacheFolder = null)
    : CaptionPairStage<CaptionBatchData>(model, data, batchSize, seed, cacheVision, cacheFolder)
{
    protected override CaptionBatchData Collate(IReadOnlyList<(CaptionImage Image, string Caption)> pairs) =>
        Data.Collate.Captions(pairs, TaskData.CaptionPrompt, pixels: Tokens is null);

    public override StepLoss Loss(CaptionBatchData batch, Device device, int step)
    {
        var (images, ids, padding) = batch.ToTensors(device);
        var loss = Tokens is null
            ? Captioning.Loss(Model, images, ids, padding, batch.PromptLength)
            : Captioning.LossFromTokens(Model, Tokens.Gather(batch.ImageIds, device), ids, padding, batch.PromptLength);
        return new StepLoss(loss, new Dictionary<string, Tensor> { ["caption"] = loss });
    }

    public override double Validate(Device device) =>
        Evaluation.Captioning(Model, Data.Captions("val").Take(validationImages).ToList(), Data.Collate, TaskData.CaptionPrompt, device,
            new BeamSettings(1, 20, 5)).CiderD;
}
