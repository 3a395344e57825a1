using System.Text.Json;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Data.Pipeline;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Objectives;
using EfficientVlm.Model.Pruning;
using EfficientVlm.Model.Tasks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Training;

/// <summary>
/// Modal-adaptive pruning of a fine-tuned compact model (method.md section 4): the task loss and KD
/// from the fine-tuned teacher (frozen, eval mode) with the task's weights, plus the Lagrangian that
/// holds one global expected sparsity; hard-concrete gates sampled once per step. Validation uses the
/// deterministic masks; a checkpoint only counts as best once the expected sparsity is within 0.02 of
/// the target (before that, steps rank by closeness to the target), and the masks of the best step are kept.
/// KD covers the task logits and every stream's hidden states and attention maps, the fusion cross-attention maps
/// included (<see cref="Distillation.StreamKd"/>). From <c>freezeMasksAtStep</c> on (VQA: a set epoch), as soon as the
/// expected sparsity is within 0.02 of the target, the masks are frozen for the rest of the run: the deterministic masks
/// are used, the Lagrangian is dropped and neither gates nor lambdas move, while the weights go on learning under the
/// final masks. (The method freezes at the set epoch unconditionally, after long runs that sit on the target by then; a
/// short run that is still off target would lock in a miss, so it waits for the window.)
/// When the stem's channels are pruned too, "in the window" also needs the stem's expected multiply-add sparsity within
/// 0.03 of its own target.
/// </summary>
public sealed class PruneStage<TBatch> : ITrainingStage<TBatch>
{
    private readonly StageBase<TBatch> _task;
    private readonly Func<TBatch, Device, ModelGates, PruneLosses> _losses;
    private readonly Func<Device, ModelGates, double> _validate;
    private readonly double _taskWeight, _kdWeight;
    private readonly string _runDirectory;
    private readonly int? _freezeMasksAtStep;
    private int? _frozenSince;
    private double _best = double.NegativeInfinity;
    private int _step;

    public PruneStage(StageBase<TBatch> task, PruningMasks masks, SparsityController controller,
        Func<TBatch, Device, ModelGates, PruneLosses> losses, Func<Device, ModelGates, double> validate,
        double taskWeight, double kdWeight, string runDirectory, int? freezeMasksAtStep = null)
    {
        if (freezeMasksAtStep is { } f && f < controller.WarmupSteps)
            throw new ArgumentException($"Masks cannot freeze at step {f}, before the sparsity warm-up ends (step {controller.WarmupSteps}).");
        _freezeMasksAtStep = freezeMasksAtStep;
        _task = task;
        Masks = masks;
        Controller = controller;
        _losses = losses;
        _validate = validate;
        _taskWeight = taskWeight;
        _kdWeight = kdWeight;
        _runDirectory = runDirectory;
    }

    public PruningMasks Masks { get; }
    public SparsityController Controller { get; }
    public VlmModel Model => _task.Model;
    public int BatchesPerEpoch => _task.BatchesPerEpoch;
    public string BestMasksFile => Path.Combine(_runDirectory, "best-masks.json");

    public IEnumerable<(IEnumerable<Parameter> Parameters, double LrMultiplier, bool Decay)> ParameterGroups() => _task.ParameterGroups();

    public IEnumerable<TBatch> Batches(int epoch, int skip) => _task.Batches(epoch, skip);

    /// <summary>The step from which the masks are frozen, once that has happened.</summary>
    public int? FrozenSince => _frozenSince;

    private const double TargetWindow = 0.02;

    /// <summary>The stem's window is wider: a stem channel is 0.9-2.5% of its multiply-adds, against 0.013% of the pool for a neuron.</summary>
    private const double StemWindow = 0.03;

    /// <summary>Both sparsities within their windows (<paramref name="stemDistance"/>: <see cref="StemDistance"/>).</summary>
    private bool InWindow(double sparsity, double stemDistance) =>
        Math.Abs(sparsity - Controller.Target) <= TargetWindow && stemDistance <= StemWindow;

    /// <summary>How far the stem's expected multiply-add sparsity is from its target (0 when the stem is not pruned).</summary>
    private double StemDistance()
    {
        if (Controller.StemTarget is not { } target) return 0;
        using var stem = Masks.ExpectedStemSparsity();
        return Math.Abs(stem.item<float>() - target);
    }

    public StepLoss Loss(TBatch batch, Device device, int step)
    {
        _step = step;
        Controller.ZeroGrad();
        if (_frozenSince is null && _freezeMasksAtStep is { } f && step >= f && InWindow(Masks.ExpectedSparsity().item<float>(), StemDistance()))
            _frozenSince = step;
        bool frozen = _frozenSince is not null;
        var gates = frozen ? Masks.DeterministicGates() : Masks.Sample();
        var losses = _losses(batch, device, gates);
        var (lagrangian, sparsity) = frozen
            ? (torch.zeros(Array.Empty<long>(), device: losses.Task.device), Masks.ExpectedSparsity().detach())
            : Controller.Lagrangian(step);
        var total = losses.Task.mul(_taskWeight).add(losses.Kd.mul(_kdWeight)).add(lagrangian);
        var parts = new Dictionary<string, Tensor>(losses.KdParts)
        {
            ["task"] = losses.Task, ["kd"] = losses.Kd, ["lag"] = lagrangian, ["sparsity"] = sparsity,
            ["target"] = torch.tensor((float)Controller.TargetAt(step)), ["frozen"] = torch.tensor(frozen ? 1f : 0f),
        };
        if (Controller.StemTarget is not null)
        {
            parts["stem_sparsity"] = Masks.ExpectedStemSparsity().detach();
            parts["stem_target"] = torch.tensor((float)Controller.StemTargetAt(step));
        }
        // expected kept fraction of FFN neurons per modality, for progress bars and logs
        foreach (var (modality, kept) in Masks.Report().KeptNeurons) parts[$"kept_{modality}"] = torch.tensor((float)kept);
        return new StepLoss(total, parts);
    }

    public void AfterStep()
    {
        if (_frozenSince is null) Controller.Step();
        _task.AfterStep();
    }

    public double Validate(Device device)
    {
        var gates = Masks.DeterministicGates();
        double score = _validate(device, gates);
        double sparsity = Masks.ExpectedSparsity().item<float>(), stemDistance = StemDistance();
        bool reached = _step + 1 >= Controller.WarmupSteps && InWindow(sparsity, stemDistance);
        // Reached: ranked by score (scores are at most 1, or 100 for CIDEr). Not reached: below every reached step, and
        // ranked by closeness to the target, so a short run that never lands in the window keeps the masks nearest to it
        // (ranking those by score would favour the least pruned).
        double ranked = reached ? score : -1000 - Math.Abs(sparsity - Controller.Target) - stemDistance;
        if (ranked > _best)
        {
            _best = ranked;
            var keep = ModelKeep.FromGates(gates);
            Directory.CreateDirectory(_runDirectory);
            File.WriteAllText(BestMasksFile, JsonSerializer.Serialize(keep));
        }
        return ranked;
    }

    // The best ranked score travels with the checkpoint: after a resume, best-masks.json must keep
    // matching the trainer's best checkpoint (both are replaced only by a better validation).
    private const string StateFile = "prune-stage.json";

    public void SaveState(string folder)
    {
        Controller.Save(folder);
        File.WriteAllText(Path.Combine(folder, StateFile), JsonSerializer.Serialize(new SavedState(_best, _frozenSince),
            new JsonSerializerOptions { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
    }

    public void LoadState(string folder)
    {
        Controller.Load(folder);
        var path = Path.Combine(folder, StateFile);
        if (File.Exists(path))
        {
            var saved = JsonSerializer.Deserialize<SavedState>(File.ReadAllText(path),
                new JsonSerializerOptions { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals })!;
            (_best, _frozenSince) = (saved.Best, saved.FrozenSince);
        }
    }

    private sealed record SavedState(double Best, int? FrozenSince = null);
}

/// <summary>The four tasks' pruning losses (task + KD from the fine-tuned teacher) and weights.</summary>
public static class TaskPruning
{
    /// <summary>(task weight, KD weight): retrieval 0.5 (KD + ITC + ITM); VQA 0.6 / 0.4; NLVR2 0.8 / 0.2; captioning 0.7 / 0.3.</summary>
    public static (double Task, double Kd) Weights(VlmTask task) => task switch
    {
        VlmTask.Retrieval => (0.5, 0.5),
        VlmTask.Vqa => (0.6, 0.4),
        VlmTask.Nlvr2 => (0.8, 0.2),
        VlmTask.Captioning => (0.7, 0.3),
        _ => throw new ArgumentException($"No pruning recipe for {task}."),
    };

    /// <summary>Paper targets: 0.35 for VQA (decoder included), 0.25 for the others.</summary>
    public static double PaperTarget(VlmTask task) => task == VlmTask.Vqa ? 0.35 : 0.25;

    private static Tensor MaskedKl(Tensor student, Tensor teacher, Tensor mask)
    {
        var rows = mask.reshape(-1).nonzero().view(-1);
        return Distillation.LogitKl(student.reshape(-1, student.shape[^1]).index_select(0, rows),
            teacher.reshape(-1, teacher.shape[^1]).index_select(0, rows));
    }

    /// <summary>Logit KD plus every stream's KD (<see cref="Distillation.StreamKd"/>), with the parts for the logs.</summary>
    private static PruneLosses WithStreams(Tensor task, Tensor logitKd, TaskStreams student, TaskStreams teacher)
    {
        var (streams, parts) = Distillation.StreamKd(student, teacher);
        parts["kd_logits"] = logitKd;
        return new PruneLosses(task, logitKd.add(streams), parts);
    }

    public static Func<VqaBatchData, Device, ModelGates, PruneLosses> Vqa(VlmModel student, VlmModel teacher) => (batch, device, gates) =>
    {
        var (images, ids, padding, answers) = batch.ToTensors(device);
        var owner = answers.Owner;
        var ownerPadding = padding.index_select(0, owner);
        TaskStreams Streams((EncoderOutput Vision, EncoderOutput Text, EncoderOutput Fusion) q, EncoderOutput decoder) =>
            new(q.Vision, q.Text, padding, q.Fusion, padding, Decoder: decoder, DecoderPadding: answers.Padding);
        var qs = Tasks.Vqa.EncodeQuestionStreams(student, images, ids, padding, gates);
        (Tensor Logits, EncoderOutput Decoder) answerT;
        TaskStreams fromTeacher;
        using (torch.no_grad())
        {
            teacher.eval();
            var qt = Tasks.Vqa.EncodeQuestionStreams(teacher, images, ids, padding);
            answerT = Tasks.Vqa.AnswerLogitsStreams(teacher, qt.Fusion.Last.index_select(0, owner), ownerPadding, answers.Ids, answers.Padding);
            fromTeacher = Streams(qt, answerT.Decoder);
        }
        var answerS = Tasks.Vqa.AnswerLogitsStreams(student, qs.Fusion.Last.index_select(0, owner), ownerPadding, answers.Ids, answers.Padding, gates);
        var task = Tasks.Vqa.WeightedLoss(Tasks.Vqa.AnswerNll(answerS.Logits, answers.Ids, answers.Padding), answers, ids.shape[0]);
        return WithStreams(task, MaskedKl(answerS.Logits, answerT.Logits, Tasks.Vqa.PredictedTokens(answers.Padding)),
            Streams(qs, answerS.Decoder), fromTeacher);
    };

    public static Func<NlvrBatchData, Device, ModelGates, PruneLosses> Nlvr(VlmModel student, VlmModel teacher) => (batch, device, gates) =>
    {
        var (left, right, ids, padding, labels) = batch.ToTensors(device);
        TaskStreams Streams((Tensor Logits, EncoderOutput Vision, EncoderOutput Text, EncoderOutput Fusion) r) =>
            new(r.Vision, r.Text, padding, r.Fusion, padding, FusionGroup: 2);
        (Tensor Logits, EncoderOutput Vision, EncoderOutput Text, EncoderOutput Fusion) t;
        using (torch.no_grad())
        {
            teacher.eval();
            t = Tasks.Nlvr.LogitsStreams(teacher, left, right, ids, padding);
        }
        var s = Tasks.Nlvr.LogitsStreams(student, left, right, ids, padding, gates);
        return WithStreams(functional.cross_entropy(s.Logits, labels), Distillation.LogitKl(s.Logits, t.Logits), Streams(s), Streams(t));
    };

    public static Func<ImageTextBatchData, Device, ModelGates, PruneLosses> Retrieval(VlmModel student, VlmModel teacher, SpecialTokens tokens) =>
        (batch, device, gates) =>
        {
            var tensors = batch.ToTensors(device);
            TaskStreams Streams(PretrainResult r) => r.Streams is { } x
                ? new TaskStreams(x.Vision, x.Text, tensors.Padding, x.ItmFusion, x.ItmPadding)
                : throw new InvalidOperationException("The retrieval pass was not collected.");
            PretrainResult t;
            PretrainSamples samples;
            using (torch.no_grad())
            {
                teacher.eval();
                samples = Pretraining.Sample(teacher, tensors, tokens);
                t = Pretraining.Run(teacher, tensors, tokens, samples, collect: true, withMlm: false);
            }
            var s = Pretraining.Run(student, tensors, tokens, samples, gates, collect: true, withMlm: false);
            return WithStreams(s.Itc.add(s.Itm), Distillation.LogitKl(s.ItmLogits, t.ItmLogits), Streams(s), Streams(t));
        };

    public static Func<CaptionBatchData, Device, ModelGates, PruneLosses> Captioning(VlmModel student, VlmModel teacher) => (batch, device, gates) =>
    {
        var (images, ids, padding) = batch.ToTensors(device);
        long t = ids.shape[1];
        TaskStreams Streams(EncoderOutput vision, (Tensor Logits, EncoderOutput Text, EncoderOutput Fusion) r) =>
            new(vision, r.Text, padding, r.Fusion, padding);
        TaskStreams fromTeacher;
        Tensor logitsT;
        using (torch.no_grad())
        {
            teacher.eval();
            var vision = teacher.EncodeImage(images, collect: true);
            var r = Tasks.Captioning.NextTokenLogitsStreams(teacher, vision.Last, ids, padding);
            (logitsT, fromTeacher) = (r.Logits.narrow(1, 0, t - 1), Streams(vision, r));
        }
        var visionS = student.EncodeImage(images, gates, collect: true);
        var rs = Tasks.Captioning.NextTokenLogitsStreams(student, visionS.Last, ids, padding, gates);
        var logitsS = rs.Logits.narrow(1, 0, t - 1);
        var (mask, targets) = Tasks.Captioning.CaptionTargets(ids, padding, batch.PromptLength);
        return WithStreams(Tasks.Captioning.SmoothedLoss(logitsS, targets), MaskedKl(logitsS, logitsT, mask), Streams(visionS, rs), fromTeacher);
    };
}

/// <summary>One pruning step's task loss and KD (logits and streams), with the KD parts for the logs.</summary>
public sealed record PruneLosses(Tensor Task, Tensor Kd, IReadOnlyDictionary<string, Tensor> KdParts);
