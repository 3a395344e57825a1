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
/// KD here is on the task logits and the last fused states (attention-map KD is not done yet).
/// </summary>
public sealed class PruneStage<TBatch> : ITrainingStage<TBatch>
{
    private readonly StageBase<TBatch> _task;
    private readonly Func<TBatch, Device, ModelGates, (Tensor Task, Tensor Kd)> _losses;
    private readonly Func<Device, ModelGates, double> _validate;
    private readonly double _taskWeight, _kdWeight;
    private readonly string _runDirectory;
    private double _best = double.NegativeInfinity;
    private int _step;

    public PruneStage(StageBase<TBatch> task, PruningMasks masks, SparsityController controller,
        Func<TBatch, Device, ModelGates, (Tensor Task, Tensor Kd)> losses, Func<Device, ModelGates, double> validate,
        double taskWeight, double kdWeight, string runDirectory)
    {
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

    public StepLoss Loss(TBatch batch, Device device, int step)
    {
        _step = step;
        Controller.ZeroGrad();
        var gates = Masks.Sample();
        var (task, kd) = _losses(batch, device, gates);
        var (lagrangian, sparsity) = Controller.Lagrangian(step);
        var total = task.mul(_taskWeight).add(kd.mul(_kdWeight)).add(lagrangian);
        var parts = new Dictionary<string, Tensor>
        {
            ["task"] = task, ["kd"] = kd, ["lag"] = lagrangian, ["sparsity"] = sparsity,
            ["target"] = torch.tensor((float)Controller.TargetAt(step)),
        };
        // expected kept fraction of FFN neurons per modality, for progress bars and logs
        foreach (var (modality, kept) in Masks.Report().KeptNeurons) parts[$"kept_{modality}"] = torch.tensor((float)kept);
        return new StepLoss(total, parts);
    }

    public void AfterStep()
    {
        Controller.Step();
        _task.AfterStep();
    }

    public double Validate(Device device)
    {
        var gates = Masks.DeterministicGates();
        double score = _validate(device, gates);
        double sparsity = Masks.ExpectedSparsity().item<float>();
        bool reached = _step + 1 >= Controller.WarmupSteps && Math.Abs(sparsity - Controller.Target) <= 0.02;
        // Reached: ranked by score (scores are at most 1, or 100 for CIDEr). Not reached: below every reached step, and
        // ranked by closeness to the target, so a short run that never lands in the window keeps the masks nearest to it
        // (ranking those by score would favour the least pruned).
        double ranked = reached ? score : -1000 - Math.Abs(sparsity - Controller.Target);
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
        File.WriteAllText(Path.Combine(folder, StateFile), JsonSerializer.Serialize(new SavedState(_best),
            new JsonSerializerOptions { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
    }

    public void LoadState(string folder)
    {
        Controller.Load(folder);
        var path = Path.Combine(folder, StateFile);
        if (File.Exists(path))
            _best = JsonSerializer.Deserialize<SavedState>(File.ReadAllText(path),
                new JsonSerializerOptions { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals })!.Best;
    }

    private sealed record SavedState(double Best);
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

    private static Tensor FusedMse(Tensor student, Tensor teacher, Tensor padding) =>
        Distillation.HiddenMse([student], [teacher], padding);

    public static Func<VqaBatchData, Device, ModelGates, (Tensor, Tensor)> Vqa(VlmModel student, VlmModel teacher) => (batch, device, gates) =>
    {
        var (images, ids, padding, answers) = batch.ToTensors(device);
        var owner = answers.Owner;
        var ownerPadding = padding.index_select(0, owner);
        var qs = Tasks.Vqa.EncodeQuestion(student, images, ids, padding, gates);
        Tensor qt, logitsT;
        using (torch.no_grad())
        {
            teacher.eval();
            qt = Tasks.Vqa.EncodeQuestion(teacher, images, ids, padding);
            logitsT = Tasks.Vqa.AnswerLogits(teacher, qt.index_select(0, owner), ownerPadding, answers.Ids, answers.Padding);
        }
        var logitsS = Tasks.Vqa.AnswerLogits(student, qs.index_select(0, owner), ownerPadding, answers.Ids, answers.Padding, gates);
        var task = Tasks.Vqa.WeightedLoss(Tasks.Vqa.AnswerNll(logitsS, answers.Ids, answers.Padding), answers, ids.shape[0]);
        var kd = MaskedKl(logitsS, logitsT, Tasks.Vqa.PredictedTokens(answers.Padding)).add(FusedMse(qs, qt, padding));
        return (task, kd);
    };

    public static Func<NlvrBatchData, Device, ModelGates, (Tensor, Tensor)> Nlvr(VlmModel student, VlmModel teacher) => (batch, device, gates) =>
    {
        var (left, right, ids, padding, labels) = batch.ToTensors(device);
        Tensor t;
        using (torch.no_grad())
        {
            teacher.eval();
            t = Tasks.Nlvr.Logits(teacher, left, right, ids, padding);
        }
        var s = Tasks.Nlvr.Logits(student, left, right, ids, padding, gates);
        return (functional.cross_entropy(s, labels), Distillation.LogitKl(s, t));
    };

    public static Func<ImageTextBatchData, Device, ModelGates, (Tensor, Tensor)> Retrieval(VlmModel student, VlmModel teacher, SpecialTokens tokens) =>
        (batch, device, gates) =>
        {
            var tensors = batch.ToTensors(device);
            PretrainResult t;
            PretrainSamples samples;
            using (torch.no_grad())
            {
                teacher.eval();
                samples = Pretraining.Sample(teacher, tensors, tokens);
                t = Pretraining.Run(teacher, tensors, tokens, samples, withMlm: false);
            }
            var s = Pretraining.Run(student, tensors, tokens, samples, gates, withMlm: false);
            return (s.Itc.add(s.Itm), Distillation.LogitKl(s.ItmLogits, t.ItmLogits));
        };

    public static Func<CaptionBatchData, Device, ModelGates, (Tensor, Tensor)> Captioning(VlmModel student, VlmModel teacher) => (batch, device, gates) =>
    {
        var (images, ids, padding) = batch.ToTensors(device);
        long t = ids.shape[1];
        Tensor logitsT;
        using (torch.no_grad())
        {
            teacher.eval();
            logitsT = Tasks.Captioning.NextTokenLogits(teacher, teacher.EncodeImage(images).Last, ids, padding).narrow(1, 0, t - 1);
        }
        var logitsS = Tasks.Captioning.NextTokenLogits(student, student.EncodeImage(images, gates).Last, ids, padding, gates).narrow(1, 0, t - 1);
        var (mask, targets) = Tasks.Captioning.CaptionTargets(ids, padding, batch.PromptLength);
        return (Tasks.Captioning.SmoothedLoss(logitsS, targets), MaskedKl(logitsS, logitsT, mask));
    };
}
