using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Training;

/// <summary>Optimiser, schedule, checkpoint and evaluation settings of one training run (method.md section 3 defaults).</summary>
public sealed record TrainerOptions
{
    public int Epochs { get; init; } = 1;
    public double LearningRate { get; init; } = 1e-4;
    public double WeightDecay { get; init; } = 0.01;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.98;
    /// <summary>Linear warm-up as a fraction of all steps, then decay to zero (<see cref="Decay"/>).</summary>
    public double WarmupFraction { get; init; } = 0.1;
    /// <summary>The decay after warm-up: linear (the method's) or cosine (half a cosine period to zero).</summary>
    public LrDecay Decay { get; init; } = LrDecay.Linear;
    public double ClipNorm { get; init; } = 1.0;
    /// <summary>Write a resumable checkpoint every this many steps (0: only at epoch ends).</summary>
    public int CheckpointEvery { get; init; } = 200;
    /// <summary>Evaluate on the validation split at the end of every epoch and every this many steps (0: epoch ends only).</summary>
    public int EvaluateEvery { get; init; }
    public int Seed { get; init; } = 1;

    public void Validate()
    {
        if (Epochs < 1) throw new ArgumentException("Epochs must be at least 1.");
        if (LearningRate <= 0) throw new ArgumentException("LearningRate must be positive.");
        if (WarmupFraction is < 0 or > 1) throw new ArgumentException("WarmupFraction must be in [0, 1].");
        if (CheckpointEvery < 0 || EvaluateEvery < 0) throw new ArgumentException("Intervals must be 0 or more.");
    }
}

/// <summary>How the learning rate falls after warm-up.</summary>
public enum LrDecay
{
    Linear,
    Cosine,
}

/// <summary>The loss of one step: the total to minimise and its named parts (for progress and logs).</summary>
public sealed record StepLoss(Tensor Total, IReadOnlyDictionary<string, Tensor> Parts);

/// <summary>What a trainer reports while it runs.</summary>
public sealed record TrainingProgress(int Step, int TotalSteps, int Epoch, double Loss, IReadOnlyDictionary<string, double> Parts,
    double StepsPerSecond, double LearningRate, double? Validation, TimeSpan Elapsed)
{
    /// <summary>
    /// Seconds of this run (since it started or resumed) by where they went: "data" (waiting for the next batch, an epoch's
    /// start included), "step" (loss, backward, optimiser), "validate", "save" (best and resumable checkpoints), "report"
    /// (the progress callback). Where an epoch end's time goes is read from two of them.
    /// </summary>
    public IReadOnlyDictionary<string, double>? Seconds { get; init; }
}

/// <summary>The outcome of a run: the best validation score and where its model is.</summary>
public sealed record TrainingResult(int Steps, double BestValidation, int BestStep, string BestCheckpoint, IReadOnlyList<double> Losses, TimeSpan Elapsed);

/// <summary>
/// What differs between training stages: the model, its parameter groups, the batches of an epoch
/// (managed data, collated off the executor), the loss of a batch, and the validation score.
/// </summary>
public interface ITrainingStage<TBatch>
{
    VlmModel Model { get; }

    /// <summary>Parameter groups with a learning-rate multiplier (e.g. 2 for newly initialised parts) and whether weight decay applies.</summary>
    IEnumerable<(IEnumerable<Parameter> Parameters, double LrMultiplier, bool Decay)> ParameterGroups();

    int BatchesPerEpoch { get; }

    /// <summary>The batches of an epoch, in the order the seed gives, from <paramref name="skip"/> on (for resume).</summary>
    IEnumerable<TBatch> Batches(int epoch, int skip);

    /// <summary>Runs on the executor thread with grad enabled; <paramref name="step"/> is the global step (0-based).</summary>
    StepLoss Loss(TBatch batch, Device device, int step);

    /// <summary>Called after each optimiser step (e.g. clamp the ITC temperature).</summary>
    void AfterStep();

    /// <summary>Validation score, higher is better; runs on the executor thread without grad.</summary>
    double Validate(Device device);

    /// <summary>Extra state of the stage (e.g. pruning masks and their optimisers) saved with each resumable checkpoint.</summary>
    void SaveState(string folder) { }

    /// <summary>Restores what <see cref="SaveState"/> wrote.</summary>
    void LoadState(string folder) { }
}

/// <summary>
/// The one training loop every stage shares (minGPT-style: it does not know the model). AdamW with
/// parameter groups, linear warm-up and decay, gradient clipping, validation and best-checkpoint
/// selection on the validation split, periodic checkpoints with model, optimiser, step and RNG
/// state, and exact resume. Every tensor step runs on the device executor.
/// </summary>
public sealed class Trainer<TBatch>(ITrainingStage<TBatch> stage, TrainerOptions options, DeviceExecutor executor, string runDirectory)
{
    private const string StateFile = "trainer.json";

    public string RunDirectory => runDirectory;
    public string ResumeCheckpoint => Path.Combine(runDirectory, "last");
    public string BestCheckpoint => Path.Combine(runDirectory, "best");

    /// <summary>
    /// Called (off the executor) after each resumable checkpoint is written, with the step it holds; the
    /// trainer waits for it, so the run folder does not change meanwhile (fleet jobs upload it here).
    /// </summary>
    public Func<int, CancellationToken, Task>? CheckpointSaved { get; init; }

    private sealed record State(int Step, double BestValidation, int BestStep, List<double> Losses, double ElapsedSeconds);

    // BestValidation is -Infinity until the first validation, and a run may be checkpointed before that.
    private static readonly JsonSerializerOptions StateJson = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>Trains to the end, resuming from <see cref="ResumeCheckpoint"/> when one exists.</summary>
    public async Task<TrainingResult> RunAsync(IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default,
        int? stopAfterSteps = null)
    {
        options.Validate();
        Directory.CreateDirectory(runDirectory);
        int perEpoch = stage.BatchesPerEpoch;
        if (perEpoch < 1) throw new InvalidOperationException("The stage has no batches.");
        int total = perEpoch * options.Epochs;
        int warmup = (int)Math.Round(total * options.WarmupFraction);

        var optimizer = await executor.RunAsync(_ => CreateOptimizer());
        var state = new State(0, double.NegativeInfinity, -1, [], 0);
        if (File.Exists(Path.Combine(ResumeCheckpoint, StateFile)))
            state = await executor.RunAsync(_ => Restore(optimizer));
        var clock = Stopwatch.StartNew();
        var recent = Stopwatch.StartNew();
        int recentSteps = 0;
        int step = state.Step;
        var seconds = new Dictionary<string, double> { ["data"] = 0, ["step"] = 0, ["validate"] = 0, ["save"] = 0, ["report"] = 0 };
        var lap = Stopwatch.StartNew();
        void Lap(string part)
        {
            seconds[part] += lap.Elapsed.TotalSeconds;
            lap.Restart();
        }

        while (step < total)
        {
            int epoch = step / perEpoch;
            foreach (var batch in stage.Batches(epoch, step % perEpoch))
            {
                Lap("data");
                cancellationToken.ThrowIfCancellationRequested();
                double lr = Schedule(step, total, warmup, options.Decay);
                var (loss, parts) = await executor.RunAsync(ctx =>
                {
                    stage.Model.train();
                    // each group's initial rate is the peak rate times its multiplier
                    foreach (var group in optimizer.ParamGroups) group.LearningRate = lr * group.InitialLearningRate;
                    optimizer.zero_grad();
                    var result = stage.Loss(batch, ctx.Device, step);
                    result.Total.backward();
                    if (options.ClipNorm > 0) nn.utils.clip_grad_norm_(stage.Model.parameters().Where(p => p.requires_grad), options.ClipNorm);
                    NoCollection.Run(() => { optimizer.step(); });   // TorchSharp's Scalar crash (docs/platform.md)
                    stage.AfterStep();
                    return (result.Total.item<float>(), result.Parts.ToDictionary(p => p.Key, p => (double)p.Value.item<float>()));
                }, GradMode.Grad, cancellationToken);
                Lap("step");
                if (!float.IsFinite(loss)) throw new InvalidOperationException($"The loss became {loss} at step {step}; lower the learning rate.");
                step++;
                recentSteps++;
                state.Losses.Add(loss);

                double? validation = null;
                bool epochEnd = step % perEpoch == 0;
                if (epochEnd || (options.EvaluateEvery > 0 && step % options.EvaluateEvery == 0))
                {
                    validation = await executor.RunAsync(ctx => { stage.Model.eval(); return stage.Validate(ctx.Device); });
                    Lap("validate");
                    if (validation > state.BestValidation)
                    {
                        state = state with { BestValidation = validation.Value, BestStep = step };
                        await executor.RunAsync(_ => Checkpoint.Save(stage.Model, BestCheckpoint));
                        Lap("save");
                    }
                }
                bool stopping = stopAfterSteps is int stop && step >= stop;
                if (epochEnd || stopping || step == total || (options.CheckpointEvery > 0 && step % options.CheckpointEvery == 0))
                {
                    var snapshot = state with { Step = step, ElapsedSeconds = state.ElapsedSeconds + clock.Elapsed.TotalSeconds };
                    await executor.RunAsync(_ => Save(optimizer, snapshot));
                    state = snapshot;
                    clock.Restart();
                    if (CheckpointSaved is { } saved) await saved(step, cancellationToken);
                    Lap("save");
                }
                double rate = recentSteps / Math.Max(1e-9, recent.Elapsed.TotalSeconds);
                if (recent.Elapsed.TotalSeconds > 10) { recent.Restart(); recentSteps = 0; }
                progress?.Report(new TrainingProgress(step, total, epoch, loss, parts, rate, options.LearningRate * lr, validation,
                    TimeSpan.FromSeconds(state.ElapsedSeconds + clock.Elapsed.TotalSeconds)) { Seconds = new Dictionary<string, double>(seconds) });
                Lap("report");
                if (stopping) return Result(state, step);
                if (epochEnd) break;
            }
        }
        return Result(state, step);
    }

    private TrainingResult Result(State state, int step) =>
        new(step, state.BestValidation, state.BestStep, BestCheckpoint, state.Losses, TimeSpan.FromSeconds(state.ElapsedSeconds));

    /// <summary>Linear warm-up to the peak, then linear (or cosine) decay to zero at the last step.</summary>
    public static double Schedule(int step, int total, int warmup, LrDecay decay = LrDecay.Linear)
    {
        if (warmup > 0 && step < warmup) return (step + 1) / (double)warmup;
        double left = Math.Max(0, (total - step) / (double)Math.Max(1, total - warmup)); // 1 at the end of warm-up, 0 at the end
        return decay == LrDecay.Cosine ? 0.5 * (1 - Math.Cos(Math.PI * left)) : left;
    }

    private AdamW CreateOptimizer()
    {
        var groups = stage.ParameterGroups().Select(g => new AdamW.ParamGroup(g.Parameters.ToList(),
            new AdamW.Options { LearningRate = options.LearningRate * g.LrMultiplier, weight_decay = g.Decay ? options.WeightDecay : 0,
                beta1 = options.Beta1, beta2 = options.Beta2 }));
        return torch.optim.AdamW(groups, options.LearningRate, options.Beta1, options.Beta2, weight_decay: options.WeightDecay);
    }

    private void Save(AdamW optimizer, State state)
    {
        var temp = ResumeCheckpoint + ".saving";
        if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        Checkpoint.Save(stage.Model, temp);
        optimizer.save_state_dict(Path.Combine(temp, "optimizer.bin"));
        using (var rng = torch.get_rng_state())
            File.WriteAllBytes(Path.Combine(temp, "rng.bin"), rng.data<byte>().ToArray());
        File.WriteAllText(Path.Combine(temp, StateFile), JsonSerializer.Serialize(state, StateJson));
        stage.SaveState(temp);
        if (Directory.Exists(ResumeCheckpoint)) Directory.Delete(ResumeCheckpoint, recursive: true);
        Directory.Move(temp, ResumeCheckpoint);
    }

    private State Restore(AdamW optimizer)
    {
        using var saved = Checkpoint.Load(ResumeCheckpoint);
        using (torch.no_grad())
        {
            var target = stage.Model.state_dict();
            foreach (var (name, tensor) in saved.state_dict()) target[name].copy_(tensor);
        }
        optimizer.load_state_dict(Path.Combine(ResumeCheckpoint, "optimizer.bin"));
        stage.LoadState(ResumeCheckpoint);
        var bytes = File.ReadAllBytes(Path.Combine(ResumeCheckpoint, "rng.bin"));
        using (var rng = torch.tensor(bytes, dtype: ScalarType.Byte))
            torch.set_rng_state(rng);
        return JsonSerializer.Deserialize<State>(File.ReadAllText(Path.Combine(ResumeCheckpoint, StateFile)), StateJson)
               ?? throw new InvalidDataException($"{ResumeCheckpoint}/{StateFile} is empty.");
    }
}
