using EfficientVlm.Artifacts;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Grains.Placement;
using Microsoft.Extensions.Logging;

namespace EfficientVlm.Grains.Jobs;

/// <summary>Settings of fleet jobs; configuration section <c>Fleet:Jobs</c>.</summary>
public sealed record FleetJobOptions
{
    public const string SectionName = "Fleet:Jobs";

    /// <summary>Local scratch space of the silo's jobs (datasets and models are cached here, runs written here).</summary>
    public string WorkDirectory { get; init; } = Path.Combine(Path.GetTempPath(), "efficientvlm-fleet");

    /// <summary>
    /// Most bytes of downloaded folders kept under <see cref="WorkDirectory"/>/cache; beyond it the least recently
    /// used ones not in use are deleted (<see cref="DiskArtifactCache"/>). Default 20 GiB.
    /// </summary>
    public long DiskCacheBudgetBytes { get; init; } = 20L * 1024 * 1024 * 1024;

    /// <summary>How often an owner with an unfinished job makes sure a runner is alive (a grain timer, while the owner is active).</summary>
    public TimeSpan WatchdogPeriod { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The reminder that reactivates an owner whose silo died (durable; Orleans's minimum is lowered to this when smaller).</summary>
    public TimeSpan ReminderPeriod { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>The least time between two progress reports of a runner.</summary>
    public TimeSpan ProgressInterval { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Transient failures (storage, cluster, the TorchSharp Scalar crash) in a row, without a new checkpoint between them, before the job fails.</summary>
    public int MaxTransientFailures { get; init; } = 3;

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(WorkDirectory)) throw new ArgumentException("Fleet:Jobs:WorkDirectory is empty.");
        if (WatchdogPeriod < TimeSpan.FromMilliseconds(100) || ReminderPeriod < TimeSpan.FromSeconds(1))
            throw new ArgumentException("Fleet:Jobs:WatchdogPeriod must be at least 0.1 s and ReminderPeriod at least 1 s.");
        if (DiskCacheBudgetBytes < 1) throw new ArgumentException("Fleet:Jobs:DiskCacheBudgetBytes must be positive.");
        if (MaxTransientFailures < 0) throw new ArgumentException("Fleet:Jobs:MaxTransientFailures must be 0 or more.");
    }
}

/// <summary>Artefact kinds and input roles of jobs.</summary>
public static class JobArtifacts
{
    /// <summary>Shared store: an uploaded dataset folder.</summary>
    public const string Dataset = "dataset";
    /// <summary>Shared store: a checkpoint folder (config.json + model.safetensors).</summary>
    public const string Model = "model";
    /// <summary>Shared store: a retrieval gallery (images/ and optional texts.json).</summary>
    public const string Gallery = "gallery";
    /// <summary>Job scope: a resumable run folder.</summary>
    public const string Checkpoint = "checkpoint";
    /// <summary>Job scope: a pruning run's best weights and masks (input of the shrink).</summary>
    public const string Pruned = "pruned";

    /// <summary>Where an input role lives: kind, and whether it is in the job's scope.</summary>
    public static (string Kind, bool Scoped) Of(string role) => role switch
    {
        Dataset => (Dataset, false),
        Pruned => (Pruned, true),
        _ => (Model, false),
    };
}

/// <summary>The bookkeeping of one owner's job, kept in the owner's persistent state (renaming breaks old state).</summary>
[GenerateSerializer]
public sealed class JobState
{
    /// <summary>The stage to run (or running) now.</summary>
    [Id(0)] public string Stage { get; set; } = "";
    [Id(1)] public Guid? Runner { get; set; }
    /// <summary>The last resumable checkpoint of <see cref="CheckpointStage"/> (a <c>checkpoints/&lt;owner&gt;</c> artefact).</summary>
    [Id(2)] public string? Checkpoint { get; set; }
    [Id(3)] public string? CheckpointStage { get; set; }
    [Id(4)] public int CheckpointStep { get; set; }
    [Id(5)] public List<JobEvent> History { get; set; } = [];
    [Id(6)] public JobProgress? Progress { get; set; }
    [Id(7)] public int TransientFailures { get; set; }
    /// <summary>Inputs and outputs of the stages by role (artefact hashes).</summary>
    [Id(8)] public Dictionary<string, string> Artifacts { get; set; } = new(StringComparer.Ordinal);
    [Id(9)] public string? Error { get; set; }
    [Id(10)] public bool Finished { get; set; }
}

/// <summary>
/// What every job owner shares (architecture.md decision 4): it persists which stage runs and its last
/// checkpoint, hands stages to the runner, accepts reports only from the current runner, deletes
/// superseded checkpoints, and keeps a runner alive: a grain timer every
/// <see cref="FleetJobOptions.WatchdogPeriod"/> while active, and a reminder that brings the owner
/// back after its own silo died. Derived grains say what each stage is and what its output means.
/// </summary>
public abstract class JobOwnerGrain(BlobArtifactStore store, FleetJobOptions options, TimeProvider clock, ILogger logger)
    : Grain, IJobOwnerGrain, IRemindable
{
    private const string ReminderName = "job-watchdog";
    private IGrainTimer? _watchdog;

    /// <summary>The job's state inside the owner's persistent state; null before the job was created.</summary>
    protected abstract JobState? Job { get; }

    protected abstract Task SaveAsync();

    /// <summary>The work of <paramref name="stage"/> (without resume fields).</summary>
    protected abstract JobWork WorkFor(string stage);

    /// <summary>Records what <paramref name="stage"/> produced; returns the next stage, or null when the job is done.</summary>
    protected abstract string? Advance(string stage, JobOutput output);

    /// <summary>A stage began (or resumed) on a runner.</summary>
    protected virtual void OnStageStarted(string stage) { }

    /// <summary>The job failed for good.</summary>
    protected abstract void OnFailed(string reason);

    protected DateTimeOffset Now => clock.GetUtcNow();

    /// <summary>A waiting note while no runner can be placed (e.g. no GPU silo), shown with the owner's info.</summary>
    protected string? Waiting { get; private set; }

    /// <summary>The job's private artefact scope (checkpoints, intermediate results), deleted when the job finishes.</summary>
    protected string ScopeName => $"{this.GetGrainId().Type}.{this.GetPrimaryKeyString()}";

    private BlobArtifactStore Scope => store.Scope(ScopeName);

    private IFleetJobGrain Runner => GrainFactory.GetGrain<IFleetJobGrain>(this.GetGrainId().ToString());

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        if (Job is { Finished: false }) StartWatchdog();
        return Task.CompletedTask;
    }

    /// <summary>Call once the new job's state is saved: registers the reminder, starts the watchdog and asks for a runner.</summary>
    /// <exception cref="NoGpuSiloException">No silo can run the job now (the owner keeps trying).</exception>
    protected async Task StartJobAsync()
    {
        await this.RegisterOrUpdateReminder(ReminderName, options.ReminderPeriod, options.ReminderPeriod);
        StartWatchdog();
        await EnsureRunnerAsync(rethrow: true);
    }

    private void StartWatchdog() =>
        _watchdog ??= this.RegisterGrainTimer(_ => EnsureRunnerAsync(rethrow: false),
            new GrainTimerCreationOptions(options.WatchdogPeriod, options.WatchdogPeriod) { KeepAlive = true });

    private async Task EnsureRunnerAsync(bool rethrow)
    {
        if (Job is not { Finished: false }) return;
        try
        {
            await Runner.Ensure(this.GetGrainId());
            Waiting = null;
        }
        catch (Exception e) when (NoGpu(e) is { } noGpu)
        {
            Waiting = noGpu.Message;
            if (rethrow) throw noGpu;
            logger.LogWarning("{Owner}: waiting for a silo that can run the job: {Reason}", this.GetGrainId(), noGpu.Message);
        }
        catch (Exception e) when (!rethrow)
        {
            // the runner's silo may be dying; the next tick tries again
            logger.LogWarning(e, "{Owner}: could not reach the job runner; retrying in {Period}", this.GetGrainId(), options.WatchdogPeriod);
        }
    }

    /// <summary>The placement refusal inside <paramref name="e"/>, however the runtime wrapped it.</summary>
    private static NoGpuSiloException? NoGpu(Exception? e) => e switch
    {
        null => null,
        NoGpuSiloException n => n,
        AggregateException a => a.InnerExceptions.Select(NoGpu).FirstOrDefault(n => n is not null),
        _ => NoGpu(e.InnerException),
    };

    public async Task ReceiveReminder(string reminderName, TickStatus status)
    {
        if (Job is not { Finished: false })
        {
            // finished, but an earlier unregister failed: stop ticking
            if (await this.GetReminder(reminderName) is { } reminder) await this.UnregisterReminder(reminder);
            return;
        }
        await EnsureRunnerAsync(rethrow: false);
    }

    public async Task<JobWork?> NextWork(Guid runner, string silo)
    {
        if (Job is not { Finished: false } job) return null;
        bool resume = job.Checkpoint is not null && job.CheckpointStage == job.Stage;
        if (job.Runner is not null && job.Runner != runner)
        {
            // the previous runner vanished without a word (its silo died): that counts like a transient failure,
            // so a stage that keeps killing its silo fails instead of taking down one GPU silo after another
            if (++job.TransientFailures > options.MaxTransientFailures)
            {
                await FailNowAsync(job, job.Stage, $"its runner was lost {job.TransientFailures} times in a row without a new checkpoint (silo crashes?)");
                return null;
            }
            job.History.Add(new JobEvent(Now, job.Stage, "runner lost", null, job.Progress?.Step));
        }
        job.Runner = runner;
        job.Progress = null;
        job.History.Add(new JobEvent(Now, job.Stage, resume ? "resumed" : "started", silo, resume ? job.CheckpointStep : 0));
        OnStageStarted(job.Stage);
        await SaveAsync();
        logger.LogInformation("{Owner}: stage {Stage} {What} on {Silo}{Step}", this.GetGrainId(), job.Stage,
            resume ? "resumed" : "started", silo, resume ? $" from step {job.CheckpointStep}" : "");
        return WorkFor(job.Stage) with { Scope = ScopeName, ResumeCheckpoint = resume ? job.Checkpoint : null, ResumeStep = resume ? job.CheckpointStep : 0 };
    }

    private bool IsCurrent(Guid runner, string? stage = null) =>
        Job is { Finished: false } job && job.Runner == runner && (stage is null || stage == job.Stage);

    public async Task<bool> ReportProgress(Guid runner, JobProgress progress)
    {
        if (!IsCurrent(runner, progress.Stage))
        {
            await SweepIfDiscardedAsync();
            return false;
        }
        Job!.Progress = progress;
        return true;
    }

    /// <summary>
    /// A runner that had not heard yet that its job was discarded (no job state left) may have stored artefacts in the
    /// job's scope after it was swept; nothing else writes there now, so each of its refused calls sweeps it again.
    /// </summary>
    private async Task SweepIfDiscardedAsync()
    {
        if (Job is not null) return;
        try
        {
            await Scope.DeleteAllAsync();
        }
        catch (Exception e)
        {
            logger.LogWarning(e, "{Owner}: could not sweep the discarded job's artefacts", this.GetGrainId());
        }
    }

    public async Task<bool> ReportCheckpoint(Guid runner, string stage, int step, string checkpoint)
    {
        if (!IsCurrent(runner, stage))
        {
            await SweepIfDiscardedAsync(); // while the job runs, a superseded runner's checkpoint stays until the job's end sweeps it
            return false;
        }
        var job = Job!;
        var previous = job.CheckpointStage == stage ? job.Checkpoint : null;
        (job.Checkpoint, job.CheckpointStage, job.CheckpointStep) = (checkpoint, stage, step);
        job.TransientFailures = 0; // the limit counts failures in a row, without progress between them
        await SaveAsync();
        if (previous is not null && previous != checkpoint) await DeleteQuietlyAsync(new ArtifactRef(JobArtifacts.Checkpoint, previous));
        return true;
    }

    public async Task<bool> CompleteStage(Guid runner, string stage, JobOutput output)
    {
        if (!IsCurrent(runner, stage))
        {
            await SweepIfDiscardedAsync();
            return false;
        }
        var job = Job!;
        string? next;
        try
        {
            next = Advance(stage, output);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            // a stage that reports no usable output would otherwise be redone forever
            await FailNowAsync(job, stage, e.Message);
            return false;
        }
        job.History.Add(new JobEvent(Now, stage, "done", null, job.Progress?.Step));
        var checkpoint = job.Checkpoint;
        (job.Checkpoint, job.CheckpointStage, job.CheckpointStep, job.TransientFailures) = (null, null, 0, 0);
        if (next is null)
        {
            job.Finished = true;
            job.Runner = null;
        }
        else
        {
            job.Stage = next;
        }
        await SaveAsync();
        if (checkpoint is not null) await DeleteQuietlyAsync(new ArtifactRef(JobArtifacts.Checkpoint, checkpoint));
        if (next is null) await FinishAsync(deleteScope: true);
        return true;
    }

    public async Task Fail(Guid runner, string stage, string reason, bool transient)
    {
        if (!IsCurrent(runner, stage))
        {
            await SweepIfDiscardedAsync();
            return;
        }
        var job = Job!;
        job.Runner = null;
        if (transient && ++job.TransientFailures <= options.MaxTransientFailures)
        {
            job.History.Add(new JobEvent(Now, stage, $"interrupted (attempt {job.TransientFailures} of {options.MaxTransientFailures}): {reason}", null, job.Progress?.Step));
            await SaveAsync();
            return;
        }
        await FailNowAsync(job, stage, reason);
    }

    private async Task FailNowAsync(JobState job, string stage, string reason)
    {
        job.Runner = null;
        job.History.Add(new JobEvent(Now, stage, $"failed: {reason}", null, job.Progress?.Step));
        job.Error = $"{stage}: {reason}";
        job.Finished = true;
        OnFailed(job.Error);
        await SaveAsync();
        await FinishAsync(deleteScope: false); // a retry resumes from the checkpoint and intermediates kept here
    }

    /// <summary>
    /// Ends the job for good, running or not: the runner is refused at its next report and stops, and the job's
    /// intermediate artefacts (checkpoints, pruned masks) are deleted. The owner then clears its own state.
    /// </summary>
    protected async Task DiscardJobAsync(string reason)
    {
        if (Job is { Finished: false } job)
        {
            (job.Runner, job.Finished, job.Error) = (null, true, $"{job.Stage}: {reason}");
            job.History.Add(new JobEvent(Now, job.Stage, reason, null, job.Progress?.Step));
            await SaveAsync();
        }
        await FinishAsync(deleteScope: true);
    }

    /// <summary>
    /// When the job failed: clears the failure and starts it again at the failed stage (from that stage's
    /// last checkpoint). Returns false when there is nothing to retry.
    /// </summary>
    protected async Task<bool> RetryIfFailedAsync(Action onRetry)
    {
        if (Job is not { Finished: true, Error: not null } job) return false;
        (job.Finished, job.Error, job.TransientFailures, job.Runner) = (false, null, 0, null);
        job.History.Add(new JobEvent(Now, job.Stage, "retry requested", null, job.CheckpointStage == job.Stage ? job.CheckpointStep : 0));
        onRetry();
        await SaveAsync();
        await StartJobAsync();
        return true;
    }

    /// <summary>Stops the watchdog and reminder; after success, deletes the job's scope (checkpoints, intermediates).</summary>
    private async Task FinishAsync(bool deleteScope)
    {
        _watchdog?.Dispose();
        _watchdog = null;
        try
        {
            if (await this.GetReminder(ReminderName) is { } reminder) await this.UnregisterReminder(reminder);
        }
        catch (Exception e)
        {
            logger.LogWarning(e, "{Owner}: could not remove the job reminder (it will find the job finished)", this.GetGrainId());
        }
        if (!deleteScope) return;
        try
        {
            await Scope.DeleteAllAsync();
        }
        catch (Exception e)
        {
            logger.LogWarning(e, "{Owner}: could not delete the job's intermediate artefacts", this.GetGrainId());
        }
    }

    private async Task DeleteQuietlyAsync(ArtifactRef artifact)
    {
        try
        {
            await Scope.DeleteAsync(artifact);
        }
        catch (Exception e)
        {
            logger.LogWarning(e, "{Owner}: could not delete {Artifact}; it is swept when the job finishes", this.GetGrainId(), artifact);
        }
    }
}
