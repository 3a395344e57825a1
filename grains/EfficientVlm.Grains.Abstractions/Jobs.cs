namespace EfficientVlm.Grains.Abstractions;

/// <summary>The kinds of stage a fleet job runs (each is one function of the model library's pipeline).</summary>
public enum JobKind
{
    Distill,
    FineTune,
    Prune,
    Shrink,
    Evaluate,
}

/// <summary>
/// One stage for a job runner to do: what, with which inputs (artefact hashes by role), and the
/// checkpoint to resume from when the stage ran before.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record JobWork(
    [property: Id(0)] string Stage,
    [property: Id(1)] JobKind Kind,
    [property: Id(2)] FleetTask? Task,
    [property: Id(3)] IReadOnlyDictionary<string, string> Inputs,
    [property: Id(4)] string? StudentPreset,
    [property: Id(5)] double TargetSparsity,
    [property: Id(6)] JobSettings Settings,
    [property: Id(7)] string? ResumeCheckpoint,
    [property: Id(8)] int ResumeStep,
    [property: Id(9)] string Scope = "");

/// <summary>What a finished stage produced: a stored model (hash of a <c>model</c> artefact) and/or numbers.</summary>
[GenerateSerializer, Immutable]
public sealed record JobOutput(
    [property: Id(0)] string? Artifact,
    [property: Id(1)] VariantMetrics? Metrics,
    [property: Id(2)] IReadOnlyDictionary<string, double>? KeptHeads,
    [property: Id(3)] IReadOnlyDictionary<string, double>? KeptNeurons,
    [property: Id(4)] long? Parameters,
    [property: Id(5)] StemWidths? Stem = null);

/// <summary>The conv stem's inner widths before and after pruning (a model with a conv stem only).</summary>
[GenerateSerializer, Immutable]
public sealed record StemWidths([property: Id(0)] IReadOnlyList<int> Before, [property: Id(1)] IReadOnlyList<int> After);

/// <summary>
/// A grain that owns a job (a compact model's distillation, a variant's stages). It decides what runs
/// next and records progress; the runner (<see cref="IFleetJobGrain"/>) only executes. Every call
/// carries the runner's id: a runner that is no longer the current one gets false and stops.
/// </summary>
public interface IJobOwnerGrain : IGrainWithStringKey
{
    /// <summary>The stage to run now (null: nothing left). Makes <paramref name="runner"/> the current runner.</summary>
    Task<JobWork?> NextWork(Guid runner, string silo);

    Task<bool> ReportProgress(Guid runner, JobProgress progress);

    /// <summary>A resumable checkpoint of the current stage was stored (a <c>checkpoint</c> artefact in the job's scope).</summary>
    Task<bool> ReportCheckpoint(Guid runner, string stage, int step, string checkpoint);

    Task<bool> CompleteStage(Guid runner, string stage, JobOutput output);

    /// <summary>The stage threw. Transient failures (storage or cluster unreachable) are retried a few times; others fail the job.</summary>
    Task Fail(Guid runner, string stage, string reason, bool transient);
}

/// <summary>Where a job runner is.</summary>
[GenerateSerializer, Immutable]
public sealed record JobRunnerInfo([property: Id(0)] string Silo, [property: Id(1)] Guid Runner, [property: Id(2)] bool Started);

/// <summary>
/// Runs an owner's job on the device executor of a GPU silo (placed by the GPU placement director;
/// key: the owner's grain id). <see cref="Ensure"/> returns at once: the work runs in the background,
/// asking its owner for each stage, so after a crash a new activation simply picks up where the
/// owner's last checkpoint is.
/// </summary>
public interface IFleetJobGrain : IGrainWithStringKey
{
    Task<JobRunnerInfo> Ensure(GrainId owner);
}
