using Azure;
using EfficientVlm.Artifacts;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Grains.Placement;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Jobs;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Training;
using Microsoft.Extensions.Logging;

namespace EfficientVlm.Grains.Jobs;

/// <summary>
/// The job runner (architecture.md decision 4): placed on a GPU silo, it asks its owner for the stage
/// to run, fetches the inputs from blob storage into the silo's work folder, runs the stage through
/// <see cref="Pipeline"/> on the silo's device executor, uploads a resumable checkpoint every N steps
/// (and tells the owner), and hands the stage's output back. <see cref="Ensure"/> only starts this
/// loop; nothing waits for it. When the silo dies the activation dies with it, and the owner's
/// watchdog makes a new one, which resumes from the owner's last checkpoint.
/// </summary>
[GpuPlacement]
public sealed class FleetJobGrain(DeviceExecutor executor, BlobArtifactStore store, DiskArtifactCache disk, FleetJobOptions options, ILocalSiloDetails silo,
    TimeProvider clock, ILogger<FleetJobGrain> logger) : Grain, IFleetJobGrain
{
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;
    private Guid _runner;

    public Task<JobRunnerInfo> Ensure(GrainId owner)
    {
        bool start = _loop is null || _loop.IsCompleted;
        if (start)
        {
            _runner = Guid.NewGuid();
            _loop = RunAsync(GrainFactory.GetGrain<IJobOwnerGrain>(owner), _runner);
        }
        return Task.FromResult(new JobRunnerInfo(silo.SiloAddress.ToString(), _runner, start));
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        // The silo is stopping (or the grain is being moved): stop at the next step; the last uploaded checkpoint is where it resumes.
        await _stop.CancelAsync();
        if (_loop is not null) await _loop.WaitAsync(TimeSpan.FromSeconds(20), cancellationToken).ContinueWith(_ => { });
    }

    private async Task RunAsync(IJobOwnerGrain owner, Guid runner)
    {
        await Task.Yield(); // let Ensure return first
        var where = silo.SiloAddress.ToString();
        while (!_stop.IsCancellationRequested)
        {
            JobWork? work;
            try
            {
                work = await owner.NextWork(runner, where);
            }
            catch (Exception e)
            {
                logger.LogWarning(e, "Job runner {Runner}: its owner is unreachable; the owner's watchdog will start another", runner);
                return;
            }
            if (work is null) return;
            JobOutput output;
            using var superseded = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            try
            {
                output = await ExecuteAsync(owner, runner, work, superseded);
            }
            catch (OperationCanceledException) when (superseded.IsCancellationRequested)
            {
                logger.LogInformation("Job runner {Runner}: {Stage} stopped (silo stopping or runner superseded)", runner, work.Stage);
                return;
            }
            catch (Exception e)
            {
                bool transient = IsTransient(e);
                logger.LogError(e, "Job runner {Runner}: {Stage} failed ({Kind})", runner, work.Stage, transient ? "transient" : "permanent");
                try
                {
                    await owner.Fail(runner, work.Stage, UserMessage(e), transient);
                }
                catch (Exception report)
                {
                    logger.LogWarning(report, "Job runner {Runner}: could not report the failure", runner);
                }
                return;
            }
            try
            {
                if (!await owner.CompleteStage(runner, work.Stage, output)) return;
            }
            catch (Exception e)
            {
                // the owner's watchdog starts a new runner, which redoes the stage from its last checkpoint
                logger.LogError(e, "Job runner {Runner}: could not hand {Stage}'s output to its owner", runner, work.Stage);
                return;
            }
        }
    }

    /// <summary>
    /// Failures a retry from the last checkpoint can get past: storage or cluster unreachable, and the
    /// native Scalar crash of TorchSharp (a GC frees an implicit Scalar during the native call; see
    /// docs/platform.md): its messages name c10's Scalar.
    /// </summary>
    public static bool IsTransient(Exception e) => e switch
    {
        RequestFailedException { Status: 0 or >= 500 or 408 or 429 } or HttpRequestException or TimeoutException or OrleansException => true,
        IOException or System.Net.Sockets.SocketException or OperationCanceledException => true, // transport failures, client timeouts (not ours: those are caught before)
        System.Runtime.InteropServices.ExternalException x when x.Message.Contains("Scalar.h", StringComparison.Ordinal) => true,
        AggregateException { InnerException: { } inner } => IsTransient(inner),
        _ => false,
    };

    /// <summary>The first line of the message (native errors append their C++ stack), at most 300 characters.</summary>
    public static string UserMessage(Exception e)
    {
        if (e is AggregateException { InnerException: { } inner }) return UserMessage(inner);
        var line = e.Message.Split('\n', 2)[0].Trim();
        return line.Length <= 300 ? line : line[..300] + "...";
    }

    private async Task<JobOutput> ExecuteAsync(IJobOwnerGrain owner, Guid runner, JobWork work, CancellationTokenSource superseded)
    {
        var ct = superseded.Token;
        var scope = store.Scope(work.Scope);
        var root = Path.Combine(options.WorkDirectory, "runs", work.Scope);
        var run = Path.Combine(root, work.Stage);
        if (Directory.Exists(run)) Directory.Delete(run, recursive: true);
        if (work.ResumeCheckpoint is { } checkpoint)
            await scope.DownloadFolderAsync(new ArtifactRef(JobArtifacts.Checkpoint, checkpoint), run, ct);
        Directory.CreateDirectory(run);
        var hooks = new StageHooks(Progress(owner, runner, work.Stage, superseded), async (step, _) =>
        {
            // everything but the half-written folder the trainer renames into place (it is gone by now); not cancelled
            // half way (see Uploads), and a refused one is deleted by the owner when its job is gone
            var saved = await scope.PutFolderAsync(JobArtifacts.Checkpoint, run, Uploads, include: n => !n.StartsWith("last.saving/", StringComparison.Ordinal));
            if (!await owner.ReportCheckpoint(runner, work.Stage, step, saved.Hash)) await superseded.CancelAsync();
        });
        var inputs = new List<DiskArtifactCache.Lease>(); // held until the stage is over, so the disk cache keeps them
        try
        {
            var output = await RunStageAsync(work, scope, run, Input, hooks, ct);
            Discard(run, root); // the outputs are stored; a redo of this stage starts from its stored checkpoint, not from this folder
            return output;
        }
        finally
        {
            foreach (var lease in inputs) lease.Dispose();
        }

        async Task<string> Input(string role)
        {
            if (!work.Inputs.TryGetValue(role, out var hash)) throw new InvalidOperationException($"The {work.Stage} stage has no '{role}' input.");
            var (kind, scoped) = JobArtifacts.Of(role);
            var lease = await disk.AcquireAsync(scoped ? scope : store, new ArtifactRef(kind, hash), ct);
            inputs.Add(lease);
            return lease.Path;
        }
    }

    /// <summary>
    /// Uploads are never cancelled half way: a stop (silo shutdown, superseded or discarded job) that cut one would leave
    /// content blobs that no manifest names. A finished upload is either taken by the owner or deleted by it when its job is gone.
    /// </summary>
    private static CancellationToken Uploads => CancellationToken.None;

    /// <summary>Deletes a finished stage's run folder, and the job's folder once no stage folder is left in it.</summary>
    private void Discard(string run, string root)
    {
        try
        {
            Directory.Delete(run, recursive: true);
            if (!Directory.EnumerateFileSystemEntries(root).Any()) Directory.Delete(root);
        }
        catch (IOException e)
        {
            logger.LogWarning(e, "Job runner: could not delete the finished run folder {Folder}", run);
        }
    }

    private async Task<JobOutput> RunStageAsync(JobWork work, BlobArtifactStore scope, string run, Func<string, Task<string>> input, StageHooks hooks,
        CancellationToken ct)
    {
        var settings = work.Settings.ToPipeline();
        var task = work.Task is { } t ? t.ToModel() : VlmTask.Pretrain;
        switch (work.Kind)
        {
            case JobKind.Distill:
            {
                await Pipeline.DistillAsync(executor, await input("teacher"), work.StudentPreset ?? "demo", await input(JobArtifacts.Dataset),
                    settings, run, hooks, ct);
                return new JobOutput((await store.PutFolderAsync(JobArtifacts.Model, Path.Combine(run, "best"), Uploads)).Hash, null, null, null, null);
            }
            case JobKind.FineTune:
            {
                await Pipeline.FineTuneAsync(executor, await input("init"), task, await input(JobArtifacts.Dataset), settings, run, hooks, ct);
                return new JobOutput((await store.PutFolderAsync(JobArtifacts.Model, Path.Combine(run, "best"), Uploads)).Hash, null, null, null, null);
            }
            case JobKind.Prune:
            {
                await Pipeline.PruneAsync(executor, await input("student"), await input("teacher"), task, work.TargetSparsity,
                    await input(JobArtifacts.Dataset), settings, run, hooks, ct);
                var pruned = await scope.PutFolderAsync(JobArtifacts.Pruned, run, Uploads,
                    include: n => n == "best-masks.json" || n.StartsWith("best/", StringComparison.Ordinal));
                return new JobOutput(pruned.Hash, null, null, null, null);
            }
            case JobKind.Shrink:
            {
                var report = await Pipeline.ShrinkAsync(executor, await input(JobArtifacts.Pruned), Path.Combine(run, "shrunk"), await input(JobArtifacts.Dataset));
                var shrunk = await store.PutFolderAsync(JobArtifacts.Model, Path.Combine(run, "shrunk"), Uploads);
                var stem = report.StemWidths is { } w ? new StemWidths(w.Before, w.After) : null;
                return new JobOutput(shrunk.Hash, null, report.KeptHeads, report.KeptNeurons, report.ParametersAfter, stem);
            }
            case JobKind.Evaluate:
            {
                var r = await Pipeline.EvaluateAsync(executor, await input("model"), await input("teacher"), task, await input(JobArtifacts.Dataset),
                    settings, ct);
                var metrics = new VariantMetrics(r.Metric, r.Score, r.TeacherScore, r.Scores, r.Parameters, r.TeacherParameters,
                    r.SpeedUpBatch1, r.SpeedUpBatch32, new Dictionary<string, double>(), new Dictionary<string, double>());
                return new JobOutput(null, metrics, null, null, r.Parameters);
            }
            default:
                throw new InvalidOperationException($"Unknown job kind {work.Kind}.");
        }
    }

    /// <summary>Progress to the owner at most every <see cref="FleetJobOptions.ProgressInterval"/> (and on validations); a refusal stops the run.</summary>
    private IProgress<TrainingProgress> Progress(IJobOwnerGrain owner, Guid runner, string stage, CancellationTokenSource superseded)
    {
        var last = DateTimeOffset.MinValue;
        return new CallbackProgress<TrainingProgress>(p =>
        {
            var now = clock.GetUtcNow();
            if (now - last < options.ProgressInterval && p.Validation is null && p.Step != p.TotalSteps) return;
            last = now;
            var report = new JobProgress(stage, p.Step, p.TotalSteps, p.Loss, p.Parts.ToDictionary(), p.Parts.TryGetValue("sparsity", out var s) ? s : null,
                p.StepsPerSecond, now);
            owner.ReportProgress(runner, report).ContinueWith(t =>
            {
                if (t.IsCompletedSuccessfully && !t.Result)
                {
                    try { superseded.Cancel(); } catch (ObjectDisposedException) { } // the stage ended meanwhile
                }
                else if (t.IsFaulted) logger.LogWarning(t.Exception, "Job runner {Runner}: a progress report was lost", runner);
            }, TaskScheduler.Current);
        });
    }
}

/// <summary>Between the fleet's message records and the model library's types.</summary>
public static class JobMapping
{
    public static VlmTask ToModel(this FleetTask task) => task switch
    {
        FleetTask.Vqa => VlmTask.Vqa,
        FleetTask.Nlvr2 => VlmTask.Nlvr2,
        FleetTask.Retrieval => VlmTask.Retrieval,
        FleetTask.Captioning => VlmTask.Captioning,
        _ => throw new ArgumentOutOfRangeException(nameof(task)),
    };

    public static LrDecay ToModel(this RateDecay decay) => decay switch
    {
        RateDecay.Linear => LrDecay.Linear,
        RateDecay.Cosine => LrDecay.Cosine,
        _ => throw new ArgumentOutOfRangeException(nameof(decay)),
    };

    /// <exception cref="ArgumentException">A budget or rate is out of range (from <see cref="PipelineSettings.Validate"/>).</exception>
    public static PipelineSettings ToPipeline(this JobSettings s)
    {
        var settings = new PipelineSettings
        {
            DistillEpochs = s.DistillEpochs, FineTuneEpochs = s.FineTuneEpochs, PruneEpochs = s.PruneEpochs, PruneWarmupEpochs = s.PruneWarmupEpochs,
            BatchSize = s.BatchSize, LearningRate = s.LearningRate, PruneLearningRate = s.PruneLearningRate, MaskLearningRate = s.MaskLearningRate,
            TrainLimit = s.TrainLimit, EvalLimit = s.EvalLimit, CheckpointEvery = s.CheckpointEvery, Seed = s.Seed,
            WarmupFraction = s.WarmupFraction, Decay = s.Decay.ToModel(), StemTarget = s.StemTarget,
            FrozenMaskEpochs = s.FrozenMaskEpochs,
        };
        settings.Validate();
        return settings;
    }
}
