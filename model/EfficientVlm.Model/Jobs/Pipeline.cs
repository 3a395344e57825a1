using System.Diagnostics;
using System.Text.Json;
using EfficientVlm.Common;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Data.ShapesWorld;
using EfficientVlm.Model.Metrics;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Pruning;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Serving;
using EfficientVlm.Model.Tasks;
using EfficientVlm.Model.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Jobs;

/// <summary>Budgets and rates of the stages a fleet job runs (the <c>vlm</c> commands take the same as options).</summary>
public sealed record PipelineSettings
{
    public int DistillEpochs { get; init; } = 1;
    public int FineTuneEpochs { get; init; } = 1;
    public int PruneEpochs { get; init; } = 2;
    /// <summary>Sparsity warm-up of pruning, in epochs.</summary>
    public double PruneWarmupEpochs { get; init; } = 1;
    public int BatchSize { get; init; } = 32;
    /// <summary>Peak rate of distillation and fine-tuning.</summary>
    public double LearningRate { get; init; } = 1e-4;
    /// <summary>Warm-up of distillation's and fine-tuning's rate, as a fraction of their steps; then <see cref="Decay"/> to zero.</summary>
    public double WarmupFraction { get; init; } = 0.1;
    /// <summary>How distillation's and fine-tuning's rate falls after the warm-up (pruning keeps the method's linear decay).</summary>
    public LrDecay Decay { get; init; } = LrDecay.Linear;
    /// <summary>Peak rate of the model's weights while pruning.</summary>
    public double PruneLearningRate { get; init; } = 5e-5;
    /// <summary>Rate of log_alpha and the lambdas (paper 0.01; 0.1 reaches the target in short runs, see docs/pruning.md).</summary>
    public double MaskLearningRate { get; init; } = 0.1;
    /// <summary>Global (modal-adaptive, the method) or Uniform (the same sparsity in every modality: the ablation).</summary>
    public SparsityMode Sparsity { get; init; } = SparsityMode.Global;
    /// <summary>
    /// Prune the conv stem's channels too, to this sparsity of the stem's multiply-adds (a target of its own, beside the
    /// parameter target; docs/stem-pruning-plan.md); null: the stem stays whole.
    /// </summary>
    public double? StemTarget { get; init; }
    /// <summary>
    /// In the last this many pruning epochs the masks freeze (method.md section 4, for VQA; the weights adapt to the final
    /// masks), from the first step there at which the expected sparsity is within 0.02 of the target. Only when those
    /// epochs start at or after the warm-up's end; 0: never; null: the method's, 1 for VQA and 0 for the other tasks.
    /// </summary>
    public int? FrozenMaskEpochs { get; init; }
    /// <summary>Use only the first N training records (short runs); null: all.</summary>
    public int? TrainLimit { get; init; }
    /// <summary>Use only the first N validation and test records; null: all.</summary>
    public int? EvalLimit { get; init; }
    /// <summary>A resumable checkpoint every this many steps.</summary>
    public int CheckpointEvery { get; init; } = 200;
    public int Seed { get; init; } = 1;

    /// <summary>The most epochs a stage may ask for (a job's budget comes from its caller).</summary>
    public const int MaxEpochs = 100;
    /// <summary>The largest record limit (ShapesWorld's default train split has 100,000 captions).</summary>
    public const int MaxRecords = 10_000_000;
    /// <summary>The largest peak rate of the weights; the gates' rate may go to 10 times that.</summary>
    public const double MaxLearningRate = 1;

    /// <summary>Every budget within its bounds (so steps = records / batch x epochs stays far inside an int).</summary>
    /// <exception cref="ArgumentException">The first budget out of bounds, named, with its bounds.</exception>
    public void Validate()
    {
        if (DistillEpochs < 1 || FineTuneEpochs < 1 || PruneEpochs < 1) throw new ArgumentException("Every stage needs at least one epoch.");
        if (DistillEpochs > MaxEpochs || FineTuneEpochs > MaxEpochs || PruneEpochs > MaxEpochs)
            throw new ArgumentException($"A stage may take at most {MaxEpochs} epochs.");
        if (BatchSize is < 1 or > 1024) throw new ArgumentException($"Batch size {BatchSize} is outside 1..1024.");
        // written as !(x > 0) so that NaN is refused too
        if (!(LearningRate > 0) || !(PruneLearningRate > 0) || !(MaskLearningRate > 0)) throw new ArgumentException("Learning rates must be positive.");
        if (LearningRate > MaxLearningRate || PruneLearningRate > MaxLearningRate || MaskLearningRate > 10 * MaxLearningRate)
            throw new ArgumentException($"Learning rates must be at most {MaxLearningRate} ({10 * MaxLearningRate} for the gates).");
        if (!(WarmupFraction >= 0 && WarmupFraction < 1)) throw new ArgumentException($"The warm-up fraction {WarmupFraction} is outside [0, 1).");
        if (!(PruneWarmupEpochs >= 0 && PruneWarmupEpochs <= PruneEpochs)) throw new ArgumentException("The sparsity warm-up must lie within the pruning epochs.");
        if (TrainLimit is < 1 or > MaxRecords || EvalLimit is < 1 or > MaxRecords)
            throw new ArgumentException($"Record limits must lie in 1..{MaxRecords:N0}.");
        if (CheckpointEvery is < 1 or > 1_000_000) throw new ArgumentException("CheckpointEvery must lie in 1..1,000,000.");
        if (FrozenMaskEpochs is { } frozen && (frozen < 0 || frozen > PruneEpochs)) throw new ArgumentException("FrozenMaskEpochs must lie within the pruning epochs.");
        if (StemTarget is { } stem && !(stem > 0 && stem < 1)) throw new ArgumentException($"The stem's target sparsity {stem} must lie strictly between 0 and 1.");
    }
}

/// <summary>Where a stage reports: progress events, and a callback after each resumable checkpoint (the run folder is stable while it runs).</summary>
public sealed record StageHooks(IProgress<TrainingProgress>? Progress = null, Func<int, CancellationToken, Task>? CheckpointSaved = null);

/// <summary>What the physical shrink produced.</summary>
/// <param name="StemWidths">The conv stem's inner widths before and after (null: no conv stem).</param>
public sealed record ShrinkReport(long ParametersBefore, long ParametersAfter, string Hash,
    IReadOnlyDictionary<string, double> KeptHeads, IReadOnlyDictionary<string, double> KeptNeurons,
    (IReadOnlyList<int> Before, IReadOnlyList<int> After)? StemWidths = null);

/// <summary>A model scored on the test split next to its teacher, with the measured speed-up.</summary>
public sealed record EvaluationReport(string Metric, double Score, double TeacherScore, IReadOnlyDictionary<string, double> Scores,
    long Parameters, long TeacherParameters, double SpeedUpBatch1, double SpeedUpBatch32);

/// <summary>
/// The stages of the fleet's jobs as plain functions over checkpoint folders: general distillation,
/// task fine-tuning, modal-adaptive pruning, shrink, evaluation. Every tensor step runs on the given
/// executor; each training stage resumes from <c>&lt;run&gt;/last</c> when it exists. The fleet's job grain
/// and the <c>vlm</c> commands both call these, so a variant made by the fleet is made the same way
/// as one made by hand.
/// </summary>
public static class Pipeline
{
    /// <summary>The score a variant is judged by, per task (higher is better, 0-100).</summary>
    public static string PrimaryMetric(VlmTask task) => task switch
    {
        VlmTask.Vqa => "vqa_accuracy",
        VlmTask.Nlvr2 => "nlvr2_accuracy",
        VlmTask.Retrieval => "r_mean",
        VlmTask.Captioning => "cider_d",
        _ => throw new ArgumentException($"{task} has no task metric."),
    };

    /// <summary>General distillation of a pre-trained teacher into a student of <paramref name="studentPreset"/> (method.md section 3).</summary>
    public static async Task<TrainingResult> DistillAsync(DeviceExecutor executor, string teacherDir, string studentPreset, string dataDir,
        PipelineSettings settings, string runDir, StageHooks hooks, CancellationToken ct)
    {
        settings.Validate();
        var (teacher, student, stage, data) = await executor.RunAsync(_ =>
        {
            torch.manual_seed(settings.Seed);
            var teacher = Checkpoint.Load(teacherDir);
            VlmModel? student = null;
            try
            {
                var config = Presets.Get(studentPreset) with { VocabSize = teacher.Config.VocabSize, MaxTextLength = teacher.Config.MaxTextLength };
                student = StudentInit.FromTeacher(teacher, config);
                foreach (var p in teacher.parameters()) p.requires_grad = false;
                var data = new TaskData(dataDir, config, settings.TrainLimit, settings.EvalLimit, model: teacherDir);
                return (teacher, student, new DistillStage(teacher, student, data, settings.BatchSize, settings.Seed), data);
            }
            catch
            {
                // kept modules live outside the executor's scope: free them when setup fails
                student?.Dispose();
                teacher.Dispose();
                throw;
            }
        }, cancellationToken: ct);
        try
        {
            var result = await Bind(stage).RunAsync(Options(settings, settings.DistillEpochs, settings.LearningRate, scheduled: true), executor, runDir, hooks, ct);
            CarryWords(runDir, data, VlmTask.Pretrain);
            return result;
        }
        finally
        {
            await DisposeAsync(executor, teacher, student);
        }
    }

    /// <summary>Fine-tunes a pre-trained or distilled model for one task (no pruning).</summary>
    public static async Task<TrainingResult> FineTuneAsync(DeviceExecutor executor, string initDir, VlmTask task, string dataDir,
        PipelineSettings settings, string runDir, StageHooks hooks, CancellationToken ct)
    {
        settings.Validate();
        var (model, stage, data) = await executor.RunAsync(_ =>
        {
            torch.manual_seed(settings.Seed);
            using var pretrained = Checkpoint.Load(initDir);
            var model = TaskConversion.ToTask(pretrained, task, out var fresh);
            try
            {
                var data = new TaskData(dataDir, model.Config, settings.TrainLimit, settings.EvalLimit, model: initDir);
                IBoundStage stage = task switch
                {
                    VlmTask.Vqa => Bind(new VqaStage(model, data, settings.BatchSize, settings.Seed, fresh)),
                    VlmTask.Nlvr2 => Bind(new NlvrStage(model, data, settings.BatchSize, settings.Seed, fresh)),
                    VlmTask.Retrieval => Bind(new RetrievalStage(model, data, settings.BatchSize, settings.Seed)),
                    VlmTask.Captioning => Bind(new CaptionStage(model, data, settings.BatchSize, settings.Seed)),
                    _ => throw new ArgumentException($"Cannot fine-tune for {task}."),
                };
                return (model, stage, data);
            }
            catch
            {
                model.Dispose();
                throw;
            }
        }, cancellationToken: ct);
        try
        {
            var result = await stage.RunAsync(Options(settings, settings.FineTuneEpochs, settings.LearningRate, scheduled: true), executor, runDir, hooks, ct);
            CarryWords(runDir, data, task);
            return result;
        }
        finally
        {
            await DisposeAsync(executor, model);
        }
    }

    /// <summary>
    /// Modal-adaptive pruning of the student for its task with KD from the fine-tuned teacher (method.md
    /// sections 4-6). A task-agnostic student gets the task's heads first (pruning then happens during
    /// its fine-tuning, as in the paper); a fine-tuned one is pruned as it is. The masks of the best
    /// validation step go to <c>&lt;run&gt;/best-masks.json</c>, the weights to <c>&lt;run&gt;/best</c>.
    /// </summary>
    public static async Task<TrainingResult> PruneAsync(DeviceExecutor executor, string studentDir, string teacherDir, VlmTask task,
        double target, string dataDir, PipelineSettings settings, string runDir, StageHooks hooks, CancellationToken ct)
    {
        settings.Validate();
        if (target is <= 0 or >= 1) throw new ArgumentException($"Target sparsity {target} must lie strictly between 0 and 1.");
        var setup = await executor.RunAsync(_ =>
        {
            torch.manual_seed(settings.Seed);
            var loaded = Checkpoint.Load(studentDir);
            var student = loaded;
            if (loaded.Config.Task != task)
            {
                if (loaded.Config.Task != VlmTask.Pretrain)
                    throw new ArgumentException($"The student is fine-tuned for {loaded.Config.Task}, not {task}.");
                student = TaskConversion.ToTask(loaded, task);
                loaded.Dispose();
            }
            VlmModel? teacher = null;
            try
            {
                teacher = Checkpoint.Load(teacherDir);
                if (teacher.Config.Task != task)
                    throw new ArgumentException($"The teacher must be fine-tuned for {task} (it is {teacher.Config.Task}).");
                foreach (var p in teacher.parameters()) p.requires_grad = false;
                var data = new TaskData(dataDir, student.Config, settings.TrainLimit, settings.EvalLimit, model: studentDir);
                SameWords(data.VocabularyPath, ModelPackage.Vocabulary(teacherDir) ?? Path.Combine(dataDir, "vocab.txt"));
                var masks = Scopes.Keep(new PruningMasks(student.Config, stem: settings.StemTarget is not null));
                return (Student: student, Teacher: teacher, Data: data, Masks: masks);
            }
            catch
            {
                teacher?.Dispose();
                student.Dispose();
                throw;
            }
        }, cancellationToken: ct);
        try
        {
            var (s, t, d, b) = (setup.Student, setup.Teacher, setup.Data, settings.BatchSize);
            IPruneRun run = task switch
            {
                VlmTask.Vqa => Prune(new VqaStage(s, d, b, settings.Seed), TaskPruning.Vqa(s, t),
                    (device, g) => Evaluation.Vqa(s, d.Vqa("val"), d.Collate, d.AnswerList, device, gates: g)),
                VlmTask.Nlvr2 => Prune(new NlvrStage(s, d, b, settings.Seed), TaskPruning.Nlvr(s, t),
                    (device, g) => Evaluation.Nlvr(s, d.Nlvr("val"), d.Collate, device, gates: g)),
                VlmTask.Retrieval => Prune(new RetrievalStage(s, d, b, settings.Seed), TaskPruning.Retrieval(s, t, d.Tokenizer.Special),
                    (device, g) => Evaluation.Retrieval(s, d.Captions("val"), d.Collate, device, gates: g).Mean),
                _ => Prune(new CaptionStage(s, d, b, settings.Seed), TaskPruning.Captioning(s, t),
                    (device, g) => Evaluation.Captioning(s, d.Captions("val").Take(200).ToList(), d.Collate, TaskData.CaptionPrompt, device,
                        new BeamSettings(1, 20, 5), g).CiderD),
            };
            var result = await run.RunAsync(setup.Masks, target, task, settings, executor, runDir, hooks, ct);
            CarryWords(runDir, d, task);
            return result;
        }
        finally
        {
            await DisposeAsync(executor, setup.Student, setup.Teacher, setup.Masks);
        }
    }

    /// <summary>
    /// Applies the best masks of a pruning run to its best weights and saves the physically smaller model
    /// to <paramref name="outDir"/> as a serving bundle (with the pruned model's vocabulary and, for VQA, its answer list; the
    /// data folder's for a run that carries none).
    /// </summary>
    public static Task<ShrinkReport> ShrinkAsync(DeviceExecutor executor, string pruneRunDir, string outDir, string dataDir) => executor.RunAsync(_ =>
    {
        var masksFile = Path.Combine(pruneRunDir, "best-masks.json");
        if (!File.Exists(masksFile))
            throw new InvalidOperationException($"{pruneRunDir} has no best-masks.json: no validation reached the target sparsity.");
        var keep = JsonSerializer.Deserialize<ModelKeep>(File.ReadAllText(masksFile))
                   ?? throw new InvalidDataException($"{masksFile} is empty.");
        using var best = Checkpoint.Load(Path.Combine(pruneRunDir, "best"));
        using var shrunk = Shrinker.Shrink(best, keep);
        var hash = Checkpoint.Save(shrunk, outDir);
        new TaskData(dataDir, best.Config, model: Path.Combine(pruneRunDir, "best")).WriteWords(outDir, best.Config.Task);
        var (heads, neurons) = KeptFractions(best.Config, keep);
        (IReadOnlyList<int>, IReadOnlyList<int>)? stem = best.Config.Stem == VisionStem.Conv ? (best.Config.StemWidths, shrunk.Config.StemWidths) : null;
        return new ShrinkReport(ParameterCounts.Count(best), ParameterCounts.Count(shrunk), hash, heads, neurons, stem);
    });

    /// <summary>
    /// Writes the words a stage trained with (its vocabulary and, for VQA, its answer list) beside the run's best weights,
    /// where the next stage, the shrink and the fleet's upload find them.
    /// </summary>
    private static void CarryWords(string runDir, TaskData data, VlmTask task)
    {
        var best = Path.Combine(runDir, "best");
        if (Directory.Exists(best)) data.WriteWords(best, task);
    }

    /// <summary>
    /// KD compares token distributions: the student and its teacher must number their words alike (a model without a
    /// vocabulary of its own reads the data folder's).
    /// </summary>
    private static void SameWords(string studentVocabulary, string teacherVocabulary)
    {
        if (!ModelPackage.SameVocabulary(studentVocabulary, teacherVocabulary))
            throw new ArgumentException($"The student's vocabulary ({studentVocabulary}) is not its teacher's ({teacherVocabulary}): " +
                "distil the student from this teacher, or fine-tune the teacher on the same data.");
    }

    /// <summary>The kept fraction of attention heads (self and cross) and FFN neurons per modality.</summary>
    public static (Dictionary<string, double> Heads, Dictionary<string, double> Neurons) KeptFractions(VlmConfig config, ModelKeep keep)
    {
        var heads = new Dictionary<string, double>();
        var neurons = new Dictionary<string, double>();
        foreach (var stack in Enum.GetValues<Stack>())
        {
            int layers = config.Layers(stack);
            if (layers == 0) continue;
            var name = stack.ToString().ToLowerInvariant();
            var kept = keep.For(stack);
            bool cross = stack is Stack.Fusion or Stack.Decoder;
            double totalHeads = layers * config.Heads * (cross ? 2 : 1), totalNeurons = (double)layers * config.Intermediate;
            heads[name] = kept is null ? 1 : kept.Sum(l => l.Heads.Length + (cross ? l.CrossHeads.Length : 0)) / totalHeads;
            neurons[name] = kept is null ? 1 : kept.Sum(l => l.Ffn.Length) / totalNeurons;
        }
        return (heads, neurons);
    }

    /// <summary>
    /// Scores a model and its teacher on the test split with the task's official metric (every score of both: the
    /// teacher's under <c>teacher:</c>), and times both side by side (median forward latency at batch 1 and 32; ratio =
    /// teacher / model).
    /// </summary>
    public static Task<EvaluationReport> EvaluateAsync(DeviceExecutor executor, string modelDir, string teacherDir, VlmTask task, string dataDir,
        PipelineSettings settings, CancellationToken ct, string split = "test") => executor.RunAsync(ctx =>
    {
        using var model = Checkpoint.Load(modelDir, ctx.Device);
        using var teacher = Checkpoint.Load(teacherDir, ctx.Device);
        model.eval();
        teacher.eval();
        // each model reads the split with its own words: a shipped teacher's vocabulary need not be the data folder's
        var data = new TaskData(dataDir, model.Config, trainLimit: null, evalLimit: settings.EvalLimit, model: modelDir);
        var teacherData = new TaskData(dataDir, teacher.Config, trainLimit: null, evalLimit: settings.EvalLimit, model: teacherDir);
        var scores = Score(model, task, data, split, settings.EvalLimit, ctx.Device);
        var teacherScores = Score(teacher, task, teacherData, split, settings.EvalLimit, ctx.Device);
        var metric = PrimaryMetric(task);
        foreach (var (name, value) in teacherScores) scores[$"teacher:{name}"] = value; // per type / family beside the model's
        var speed = Latency.SpeedUps(teacher, model, ctx.Device, [1, 32], repeats: 5, warmup: 1);
        return new EvaluationReport(metric, scores[metric], teacherScores[metric], scores, ParameterCounts.Count(model),
            ParameterCounts.Count(teacher), speed[0], speed[1]);
    }, cancellationToken: ct);

    /// <summary>
    /// Every metric of the task on a split (0-100); for VQA and NLVR2 also the accuracy of each question type or statement
    /// family, as <c>vqa_accuracy:&lt;type&gt;</c> / <c>nlvr2_accuracy:&lt;family&gt;</c>. Run on the executor thread.
    /// </summary>
    public static Dictionary<string, double> Score(VlmModel model, VlmTask task, TaskData data, string split, int? limit, Device device, int k = 16,
        RetrievalScore retrievalScore = RetrievalScore.ItmPlusItc)
    {
        IReadOnlyList<T> Take<T>(IReadOnlyList<T> items) => limit is int n ? items.Take(n).ToList() : items;
        var scores = new Dictionary<string, double>();
        switch (task)
        {
            case VlmTask.Vqa or VlmTask.Nlvr2:
                var (byForm, forms) = ScoreByForm(model, task, data, split, limit, device, k);
                var metric = PrimaryMetric(task);
                scores[metric] = byForm[metric];
                foreach (var f in forms) scores[$"{metric}:{f.Form}"] = f.Accuracy;
                break;
            case VlmTask.Captioning:
                var (bleu, cider, _) = Evaluation.Captioning(model, Take(data.Captions(split)), data.Collate, TaskData.CaptionPrompt, device, new BeamSettings());
                scores["bleu4"] = 100 * bleu;
                scores["cider_d"] = 100 * cider;
                break;
            case VlmTask.Retrieval:
                var r = Evaluation.Retrieval(model, Take(data.Captions(split)), data.Collate, device, k, score: retrievalScore);
                scores["tr_r1"] = 100 * r.TextR1; scores["tr_r5"] = 100 * r.TextR5; scores["tr_r10"] = 100 * r.TextR10;
                scores["ir_r1"] = 100 * r.ImageR1; scores["ir_r5"] = 100 * r.ImageR5; scores["ir_r10"] = 100 * r.ImageR10;
                scores["r_mean"] = 100 * r.Mean;
                break;
            default:
                throw new ArgumentException($"{task} has no task metric: pass --task.");
        }
        return scores;
    }

    /// <summary>
    /// The VQA or NLVR2 score and its breakdown by form (VQA: question type, <see cref="VqaFormScore"/>; NLVR2: ShapesWorld
    /// statement family, <see cref="NlvrFormScore"/>), from one pass over the split.
    /// </summary>
    public static (Dictionary<string, double> Scores, IReadOnlyList<IFormScore> Forms) ScoreByForm(VlmModel model, VlmTask task, TaskData data,
        string split, int? limit, Device device, int k = 16)
    {
        IReadOnlyList<T> Take<T>(IReadOnlyList<T> items) => limit is int n ? items.Take(n).ToList() : items;
        if (task == VlmTask.Vqa)
        {
            var items = Take(data.Vqa(split));
            var answers = Evaluation.VqaAnswers(model, items, data.Collate, data.AnswerList, device, k);
            var accuracy = 100 * VqaAccuracy.Mean(answers.Zip(items, (a, i) => (a, i.Answers)));
            return (new() { ["vqa_accuracy"] = accuracy }, Breakdown.Vqa(items, answers));
        }
        if (task != VlmTask.Nlvr2) throw new ArgumentException($"Scores by form are for VQA and NLVR2, not {task}.");
        var statements = Take(data.Nlvr(split));
        var held = Evaluation.NlvrPredictions(model, statements, data.Collate, device);
        var nlvr = 100 * ClassificationAccuracy.Accuracy(held, statements.Select(i => i.Label).ToList());
        return (new() { ["nlvr2_accuracy"] = nlvr },
            Breakdown.Nlvr(statements, held, sentence => Statements.FamilyOf(sentence)?.ToString() ?? "other"));
    }

    /// <param name="scheduled">Distillation and fine-tuning: the settings' warm-up and decay; pruning: the trainer's (the method's).</param>
    private static TrainerOptions Options(PipelineSettings s, int epochs, double lr, bool scheduled = false)
    {
        var options = new TrainerOptions { Epochs = epochs, LearningRate = lr, Seed = s.Seed, CheckpointEvery = s.CheckpointEvery };
        return scheduled ? options with { WarmupFraction = s.WarmupFraction, Decay = s.Decay } : options;
    }

    private static Task DisposeAsync(DeviceExecutor executor, params IDisposable[] items) =>
        executor.RunAsync(_ =>
        {
            foreach (var item in items) item.Dispose();
            return 0;
        });

    private interface IBoundStage
    {
        Task<TrainingResult> RunAsync(TrainerOptions options, DeviceExecutor executor, string runDir, StageHooks hooks, CancellationToken ct);
    }

    private sealed class BoundStage<T>(ITrainingStage<T> stage) : IBoundStage
    {
        public Task<TrainingResult> RunAsync(TrainerOptions options, DeviceExecutor executor, string runDir, StageHooks hooks, CancellationToken ct) =>
            new Trainer<T>(stage, options, executor, runDir) { CheckpointSaved = hooks.CheckpointSaved }.RunAsync(hooks.Progress, ct);
    }

    private static IBoundStage Bind<T>(ITrainingStage<T> stage) => new BoundStage<T>(stage);

    private interface IPruneRun
    {
        Task<TrainingResult> RunAsync(PruningMasks masks, double target, VlmTask task, PipelineSettings settings, DeviceExecutor executor,
            string runDir, StageHooks hooks, CancellationToken ct);
    }

    /// <summary>The step from which the masks are frozen (<see cref="PipelineSettings.FrozenMaskEpochs"/>), or null.</summary>
    public static int? FreezeMasksAtStep(VlmTask task, PipelineSettings settings, int batchesPerEpoch, int warmupSteps)
    {
        int epochs = settings.FrozenMaskEpochs ?? (task == VlmTask.Vqa ? 1 : 0);
        if (epochs == 0) return null;
        int step = (settings.PruneEpochs - epochs) * batchesPerEpoch;
        return step >= warmupSteps ? step : null;
    }

    private static IPruneRun Prune<T>(StageBase<T> stage, Func<T, Device, ModelGates, PruneLosses> losses, Func<Device, ModelGates, double> validate) =>
        new PruneRun<T>(stage, losses, validate);

    private sealed class PruneRun<T>(StageBase<T> stage, Func<T, Device, ModelGates, PruneLosses> losses, Func<Device, ModelGates, double> validate)
        : IPruneRun
    {
        public async Task<TrainingResult> RunAsync(PruningMasks masks, double target, VlmTask task, PipelineSettings settings, DeviceExecutor executor,
            string runDir, StageHooks hooks, CancellationToken ct)
        {
            int warmup = (int)Math.Round(settings.PruneWarmupEpochs * stage.BatchesPerEpoch);
            var controller = await executor.RunAsync(_ => new SparsityController(masks, target, warmup, settings.MaskLearningRate,
                mode: settings.Sparsity, stemTarget: settings.StemTarget), cancellationToken: ct);
            try
            {
                var (taskWeight, kdWeight) = TaskPruning.Weights(task);
                var prune = new PruneStage<T>(stage, masks, controller, losses, validate, taskWeight, kdWeight, runDir,
                    FreezeMasksAtStep(task, settings, stage.BatchesPerEpoch, warmup));
                return await Bind(prune).RunAsync(Options(settings, settings.PruneEpochs, settings.PruneLearningRate), executor, runDir, hooks, ct);
            }
            finally
            {
                await executor.RunAsync(_ => controller.Dispose()); // its tensors and optimisers belong to the executor thread
            }
        }
    }
}

/// <summary>Forward latency of models side by side (the same random inputs, interleaved, medians compared).</summary>
public static class Latency
{
    /// <summary>One forward pass of image encoder, text encoder, fusion and ITM head at <paramref name="batch"/>; milliseconds.</summary>
    public static double Forward(VlmModel model, int batch, int textLength, Device? device = null)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var c = model.Config;
        var images = torch.randn(batch, 3, c.ImageSize, c.ImageSize, device: device);
        var ids = torch.randint(5, c.VocabSize, new long[] { batch, textLength }, device: device);
        var padding = torch.ones(batch, textLength, dtype: ScalarType.Int64, device: device);
        var sw = Stopwatch.StartNew();
        var image = model.EncodeImage(images).Last;
        var text = model.EncodeText(ids, padding).Last;
        var fused = model.Fuse(text, padding, image).Last;
        model.ItmLogits(fused).sum().item<float>(); // forces completion
        return sw.Elapsed.TotalMilliseconds;
    }

    /// <summary>Median latency ratio reference / candidate at each batch size, measured interleaved.</summary>
    public static double[] SpeedUps(VlmModel reference, VlmModel candidate, Device device, int[] batches, int repeats, int warmup)
    {
        int textLength = Math.Min(20, reference.Config.MaxTextLength);
        return batches.Select(b =>
        {
            var (r, c) = (new List<double>(), new List<double>());
            for (int i = -warmup; i < repeats; i++)
            {
                double tr = Forward(reference, b, textLength, device), tc = Forward(candidate, b, textLength, device);
                if (i >= 0) { r.Add(tr); c.Add(tc); }
            }
            return Quantiles.Median(r) / Quantiles.Median(c);
        }).ToArray();
    }
}
