using System.Text.Json.Serialization;

namespace EfficientVlm.Grains.Abstractions;

/// <summary>The tasks a variant serves (ShapesWorld is written in these datasets' formats).</summary>
public enum FleetTask
{
    Vqa,
    Nlvr2,
    Retrieval,
    Captioning,
}

/// <summary>Where a variant is in its life. Failed is terminal and carries the reason.</summary>
public enum VariantStage
{
    Pending,
    TeacherFineTune,
    Prune,
    Shrink,
    Evaluate,
    Ready,
    Failed,
}

/// <summary>How the rate of distillation and fine-tuning falls after its warm-up (JSON: "Linear" or "Cosine").</summary>
[JsonConverter(typeof(JsonStringEnumConverter<RateDecay>))]
public enum RateDecay
{
    /// <summary>Linear to zero at the last step (the method's).</summary>
    Linear,
    /// <summary>Half a cosine period to zero.</summary>
    Cosine,
}

/// <summary>Budgets and rates of a fleet job's training stages (the defaults suit the <c>demo</c> preset on 2 CPU cores).</summary>
[GenerateSerializer, Immutable]
public sealed record JobSettings
{
    [Id(0)] public int DistillEpochs { get; init; } = 1;
    [Id(1)] public int FineTuneEpochs { get; init; } = 1;
    [Id(2)] public int PruneEpochs { get; init; } = 2;
    [Id(3)] public double PruneWarmupEpochs { get; init; } = 1;
    [Id(4)] public int BatchSize { get; init; } = 32;
    [Id(5)] public double LearningRate { get; init; } = 1e-4;
    [Id(6)] public double PruneLearningRate { get; init; } = 5e-5;
    [Id(7)] public double MaskLearningRate { get; init; } = 0.1;
    /// <summary>Use only the first N training records; null: all.</summary>
    [Id(8)] public int? TrainLimit { get; init; }
    /// <summary>Use only the first N validation and test records; null: all.</summary>
    [Id(9)] public int? EvalLimit { get; init; }
    /// <summary>Upload a resumable checkpoint every this many steps.</summary>
    [Id(10)] public int CheckpointEvery { get; init; } = 50;
    [Id(11)] public int Seed { get; init; } = 1;
    /// <summary>Warm-up of distillation's and fine-tuning's rate, as a fraction of their steps.</summary>
    [Id(12)] public double WarmupFraction { get; init; } = 0.1;
    /// <summary>How that rate falls after the warm-up (pruning keeps the method's linear decay).</summary>
    [Id(13)] public RateDecay Decay { get; init; } = RateDecay.Linear;
    /// <summary>Also prune the conv stem's channels, to this sparsity of its multiply-adds (e.g. 0.6); null: the stem stays whole.</summary>
    [Id(14)] public double? StemTarget { get; init; }
    /// <summary>Freeze the masks in the last this many pruning epochs (null: the method's, 1 for VQA and 0 for the other tasks).</summary>
    [Id(15)] public int? FrozenMaskEpochs { get; init; }

    /// <summary>
    /// The budgets that differ from <paramref name="other"/>'s, in declaration order, as "name this (other)" (a missing
    /// limit reads "all", a missing stem target "off", the task's default "default"); empty when they are equal. Every budget counts, including any added later.
    /// </summary>
    public IReadOnlyList<string> Differences(JobSettings other) =>
        Budgets.Select(p => (p.Name, Mine: p.GetValue(this), Theirs: p.GetValue(other)))
            .Where(d => !Equals(d.Mine, d.Theirs))
            .Select(d => (d.Name, Mine: d.Mine ?? Missing(d.Name), Theirs: d.Theirs ?? Missing(d.Name)))
            .Select(d => $"{d.Name} {d.Mine} ({d.Theirs})")
            .ToList();

    private static string Missing(string budget) => budget switch
    {
        nameof(StemTarget) => "off",
        nameof(FrozenMaskEpochs) => "default",
        _ => "all",
    };

    private static readonly System.Reflection.PropertyInfo[] Budgets = typeof(JobSettings)
        .GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
        .OrderBy(p => p.MetadataToken)
        .ToArray();
}

/// <summary>
/// What a variant is: the task, the compact model it starts from, the global target sparsity and the
/// dataset (by content hash). Two requests with the same spec get the same variant.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record VariantSpec(
    [property: Id(0)] FleetTask Task,
    [property: Id(1)] string CompactModel,
    [property: Id(2)] double TargetSparsity,
    [property: Id(3)] string Dataset)
{
    /// <summary>
    /// The variant's id, derived from the spec so that equal specs meet at one grain:
    /// <c>&lt;task&gt;-&lt;compact model&gt;-s&lt;target %&gt;-&lt;first 8 of the dataset hash&gt;</c>.
    /// </summary>
    public string VariantId =>
        $"{Task.ToString().ToLowerInvariant()}-{CompactModel}-s{Math.Round(TargetSparsity * 100):0}-{Dataset[..Math.Min(8, Dataset.Length)]}";

    /// <summary>The paper's global target sparsity for <paramref name="task"/>: 0.35 for VQA, 0.25 for the others.</summary>
    public static double DefaultTargetSparsity(FleetTask task) => task == FleetTask.Vqa ? 0.35 : 0.25;

    /// <summary>A task by the name users type (vqa, nlvr2 or nlvr, retrieval, captioning or caption; any case).</summary>
    /// <exception cref="ArgumentException">Not one of them.</exception>
    public static FleetTask ParseTask(string? name) => name?.ToLowerInvariant() switch
    {
        "vqa" => FleetTask.Vqa,
        "nlvr2" or "nlvr" => FleetTask.Nlvr2,
        "retrieval" => FleetTask.Retrieval,
        "captioning" or "caption" => FleetTask.Captioning,
        _ => throw new ArgumentException($"Unknown task '{name}': vqa, nlvr2, retrieval or captioning."),
    };
}

/// <summary>What a training stage is doing now.</summary>
[GenerateSerializer, Immutable]
public sealed record JobProgress(
    [property: Id(0)] string Stage,
    [property: Id(1)] int Step,
    [property: Id(2)] int TotalSteps,
    [property: Id(3)] double Loss,
    [property: Id(4)] IReadOnlyDictionary<string, double> Parts,
    [property: Id(5)] double? ExpectedSparsity,
    [property: Id(6)] double StepsPerSecond,
    [property: Id(7)] DateTimeOffset At);

/// <summary>A line of a job's history: started, resumed (from which step), stage done, failed.</summary>
[GenerateSerializer, Immutable]
public sealed record JobEvent(
    [property: Id(0)] DateTimeOffset At,
    [property: Id(1)] string Stage,
    [property: Id(2)] string What,
    [property: Id(3)] string? Silo,
    [property: Id(4)] int? Step);

/// <summary>A ready variant's numbers (scores on the test split, 0-100).</summary>
[GenerateSerializer, Immutable]
public sealed record VariantMetrics(
    [property: Id(0)] string Metric,
    [property: Id(1)] double Score,
    [property: Id(2)] double TeacherScore,
    [property: Id(3)] IReadOnlyDictionary<string, double> Scores,
    [property: Id(4)] long Parameters,
    [property: Id(5)] long TeacherParameters,
    [property: Id(6)] double SpeedUpBatch1,
    [property: Id(7)] double SpeedUpBatch32,
    [property: Id(8)] IReadOnlyDictionary<string, double> KeptHeads,
    [property: Id(9)] IReadOnlyDictionary<string, double> KeptNeurons,
    [property: Id(10)] StemWidths? Stem = null);

/// <summary>A variant as its grain holds it (ids and hashes only).</summary>
[GenerateSerializer, Immutable]
public sealed record VariantInfo(
    [property: Id(0)] string Id,
    [property: Id(1)] VariantSpec Spec,
    [property: Id(2)] VariantStage Stage,
    [property: Id(3)] JobProgress? Progress,
    [property: Id(4)] VariantMetrics? Metrics,
    [property: Id(5)] string? Error,
    [property: Id(6)] string? Model,
    [property: Id(7)] DateTimeOffset CreatedAt,
    [property: Id(8)] DateTimeOffset UpdatedAt,
    [property: Id(9)] IReadOnlyList<JobEvent> History,
    [property: Id(10)] JobSettings Settings)
{
    public bool IsTerminal => Stage is VariantStage.Ready or VariantStage.Failed;
}

/// <summary>
/// A task variant (key: <see cref="VariantSpec.VariantId"/>): fine-tunes the teacher for the task,
/// prunes and shrinks the compact model, scores it, then (issue 8) serves it. Every call returns at
/// once; the work runs as a job on a GPU silo.
/// </summary>
public interface IVariantGrain : IGrainWithStringKey
{
    /// <summary>
    /// Starts the variant for <paramref name="spec"/> if it has not started (or retries it when it failed); returns where it is.
    /// A variant's budgets are fixed by its first request: <paramref name="settings"/> null takes the defaults for a new
    /// variant and whatever an existing one was made with.
    /// </summary>
    /// <exception cref="ArgumentException">The spec does not match this grain's key, or it is invalid, or the variant exists with other budgets.</exception>
    Task<VariantInfo> Start(VariantSpec spec, JobSettings? settings);

    /// <summary>Null when no variant was ever started under this id.</summary>
    Task<VariantInfo?> Get();

    /// <summary>
    /// Forgets the variant: its job stops (the runner is refused at its next report), its intermediate artefacts are
    /// deleted, its replicas retire and its state is cleared. The models it stored stay (content-addressed, maybe shared).
    /// </summary>
    /// <exception cref="ArgumentException">No variant under this id.</exception>
    Task Remove();

    /// <summary>How to call the variant.</summary>
    /// <exception cref="ArgumentException">No such variant, or it is not ready.</exception>
    [Orleans.Concurrency.AlwaysInterleave] // read-only; a replica activated by the variant's own scaler calls it back
    Task<ServingInfo> Serving();
}
