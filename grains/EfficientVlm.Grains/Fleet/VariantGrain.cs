using EfficientVlm.Artifacts;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Grains.Jobs;
using EfficientVlm.Grains.Placement;
using EfficientVlm.Grains.Serving;
using Microsoft.Extensions.Logging;

namespace EfficientVlm.Grains.Fleet;

/// <summary>Persistent state of a variant (grain storage "fleet"; renaming this type breaks old state).</summary>
[GenerateSerializer]
public sealed class VariantState
{
    [Id(0)] public VariantSpec? Spec { get; set; }
    [Id(1)] public JobSettings Settings { get; set; } = new();
    [Id(2)] public VariantStage Stage { get; set; }
    [Id(3)] public JobState? Job { get; set; }
    [Id(4)] public VariantMetrics? Metrics { get; set; }
    [Id(5)] public DateTimeOffset CreatedAt { get; set; }
    [Id(6)] public DateTimeOffset UpdatedAt { get; set; }
    [Id(7)] public Dictionary<string, double> KeptHeads { get; set; } = new();
    [Id(8)] public Dictionary<string, double> KeptNeurons { get; set; } = new();
    /// <summary>Replicas serving now (0: not decided yet, the configured starting count).</summary>
    [Id(9)] public int Replicas { get; set; }
    [Id(10)] public StemWidths? Stem { get; set; }
}

/// <summary>
/// A task variant: Pending -> TeacherFineTune -> Prune -> Shrink -> Evaluate -> Ready (or Failed).
/// The teacher is fine-tuned for the task (it guides pruning by KD), the compact model gets the task's
/// heads and is fine-tuned and pruned at once with one global target, the best masks are applied
/// physically, and the shrunk model is scored next to the teacher on the test split. A compact model
/// registered with a teacher for the task (<see cref="CompactModelRegistration.TaskTeachers"/>) starts at Prune
/// with that teacher.
/// </summary>
public sealed class VariantGrain(
    [PersistentState("variant", FleetStorage.GrainStateProvider)] IPersistentState<VariantState> state,
    BlobArtifactStore store, FleetJobOptions options, ServingOptions serving, GpuSilos gpus, TimeProvider clock, ILogger<VariantGrain> logger)
    : JobOwnerGrain(store, options, clock, logger), IVariantGrain
{
    private const string TeacherTask = "teacher-task", Shrunk = "shrunk";

    protected override JobState? Job => state.State.Job;

    protected override Task SaveAsync()
    {
        state.State.UpdatedAt = Now;
        return state.WriteStateAsync();
    }

    public async Task<VariantInfo> Start(VariantSpec spec, JobSettings? settings)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.VariantId != this.GetPrimaryKeyString())
            throw new ArgumentException($"Variant '{this.GetPrimaryKeyString()}' cannot hold the spec of '{spec.VariantId}'.");
        if (state.State.Spec is { } existing)
        {
            if (existing != spec) throw new ArgumentException($"Variant '{spec.VariantId}' already holds a different spec ({existing}).");
            if (settings?.Differences(state.State.Settings) is [_, ..] differences)
                throw new ArgumentException($"Variant '{spec.VariantId}' was made with other budgets; asked (made with): {string.Join(", ", differences)}. " +
                                            "A variant's budgets are fixed by its first request: ask without budgets to get it, or ask for another variant.");
            // asking again for a failed variant retries it from the failed stage's last checkpoint
            await RetryIfFailedAsync(() => state.State.Stage = Enum.Parse<VariantStage>(state.State.Job!.Stage));
            return Info()!;
        }
        settings ??= new JobSettings();
        if (spec.TargetSparsity is <= 0 or >= 1) throw new ArgumentException($"Target sparsity {spec.TargetSparsity} must lie strictly between 0 and 1.");
        Identifiers.ValidateHash(spec.Dataset, "dataset hash");
        settings.ToPipeline(); // validates
        var compact = await GrainFactory.GetGrain<ICompactModelGrain>(spec.CompactModel).Get()
                      ?? throw new ArgumentException($"No compact model '{spec.CompactModel}' is registered.");
        if (compact.Status != CompactModelStatus.Ready || compact.Student is null)
            throw new NotReadyException($"Compact model '{spec.CompactModel}' is not ready ({compact.Status}{(compact.Error is null ? "" : ": " + compact.Error)}).");

        state.State.Spec = spec;
        state.State.Settings = settings;
        state.State.Stage = VariantStage.Pending;
        state.State.CreatedAt = Now;
        state.State.Job = new JobState
        {
            Stage = nameof(VariantStage.TeacherFineTune),
            Artifacts = { ["teacher"] = compact.Teacher, ["student"] = compact.Student, [JobArtifacts.Dataset] = spec.Dataset },
        };
        if (compact.TaskTeachers?.GetValueOrDefault(spec.Task) is { } taskTeacher)
        {
            state.State.Job.Stage = nameof(VariantStage.Prune);
            state.State.Job.Artifacts[TeacherTask] = taskTeacher;
        }
        await SaveAsync();
        await StartJobAsync();
        return Info()!;
    }

    public Task<VariantInfo?> Get() => Task.FromResult(Info());

    public async Task Remove()
    {
        var s = state.State;
        if (s.Spec is null) throw new UnknownVariantException($"No variant '{this.GetPrimaryKeyString()}'.");
        await DiscardJobAsync("removed");
        _scaler?.Dispose();
        _scaler = null;
        if (s.Stage == VariantStage.Ready)
        {
            for (int i = 0; i < ReplicaCount; i++)
            {
                try
                {
                    await Replica(i).Retire(); // unloads when idle; a call that still reaches it learns the variant is gone
                }
                catch (Exception e)
                {
                    logger.LogWarning(e, "Variant {Variant}: replica {Index} could not be retired; it deactivates when idle", this.GetPrimaryKeyString(), i);
                }
            }
        }
        logger.LogInformation("Variant {Variant} removed (was {Stage})", this.GetPrimaryKeyString(), s.Stage);
        await state.ClearStateAsync();
        DeactivateOnIdle();
    }

    public Task<ServingInfo> Serving()
    {
        var s = state.State;
        if (s.Spec is null) throw new UnknownVariantException($"No variant '{this.GetPrimaryKeyString()}'.");
        if (s.Stage != VariantStage.Ready || s.Job?.Artifacts.GetValueOrDefault(Shrunk) is not { } model)
            throw new NotReadyException($"Variant '{this.GetPrimaryKeyString()}' is not ready ({s.Stage}).");
        StartScaler();
        return Task.FromResult(new ServingInfo(this.GetPrimaryKeyString(), s.Spec.Task, model, ReplicaCount));
    }

    private int ReplicaCount => Math.Clamp(state.State.Replicas == 0 ? serving.Replicas : state.State.Replicas, serving.Replicas, serving.MaxReplicas);

    private IGrainTimer? _scaler;
    private readonly Dictionary<int, (long Served, double QueueMs)> _lastStats = new();

    /// <summary>While the variant is active and ready, grows or shrinks its replicas from their measured queue delay.</summary>
    private void StartScaler() =>
        _scaler ??= this.RegisterGrainTimer(_ => ScaleAsync(), new GrainTimerCreationOptions(serving.ScaleInterval, serving.ScaleInterval));

    private async Task ScaleAsync()
    {
        int count = ReplicaCount;
        long served = 0;
        double queueMs = 0;
        var silos = new string[count];
        for (int i = 0; i < count; i++)
        {
            try
            {
                var stats = await Replica(i).Stats();
                var last = _lastStats.GetValueOrDefault(i);
                if (stats.Served < last.Served) last = default; // the replica was reactivated: its counters restarted
                served += stats.Served - last.Served;
                queueMs += stats.QueueMillisecondsTotal - last.QueueMs;
                _lastStats[i] = (stats.Served, stats.QueueMillisecondsTotal);
                silos[i] = stats.Silo;
            }
            catch (Exception e)
            {
                logger.LogWarning(e, "Variant {Variant}: replica {Index} did not report; no scaling decision this time", this.GetPrimaryKeyString(), i);
                return;
            }
        }
        double meanDelay = served == 0 ? 0 : queueMs / served;
        var eligible = gpus.Active();
        int room = Math.Max(serving.Replicas, eligible.Length * serving.MaxReplicasPerSilo);
        int target = count;
        string? where = null;
        if (count > room)
        {
            target = room; // more replicas than the eligible silos hold (one died, or the limit changed): the highest ones go
        }
        else if (served > 0 && meanDelay > serving.ScaleUpQueueDelay.TotalMilliseconds && count < serving.MaxReplicas)
        {
            var place = Fewest(eligible, silos);
            if (place is null)
            {
                if (!_noRoomLogged)
                    logger.LogInformation("Variant {Variant}: queue delay {Delay:0.0} ms, but every eligible silo already has {PerSilo} replica(s) of it; " +
                                          "it grows when a GPU silo joins", this.GetPrimaryKeyString(), meanDelay, serving.MaxReplicasPerSilo);
                _noRoomLogged = true;
                return;
            }
            where = await PlaceReplicaAsync(count, place); // warm before routing to it
            target = count + 1;
        }
        else if (meanDelay < serving.ScaleDownQueueDelay.TotalMilliseconds && count > serving.Replicas)
        {
            target = count - 1;
        }
        else if (Crowded(eligible, silos) is { } move)
        {
            // replicas came back on a surviving silo after a crash, or a silo joined: move one to the emptiest silo
            where = await PlaceReplicaAsync(move.Index, move.To);
            logger.LogInformation("Variant {Variant}: replica {Index} moved from {From} to {To}", this.GetPrimaryKeyString(), move.Index, silos[move.Index], where);
            return;
        }
        if (target == count) return;
        for (int i = target; i < count; i++) _lastStats.Remove(i); // no longer routed to; they deactivate when idle
        _noRoomLogged = false;
        state.State.Replicas = target;
        await SaveAsync();
        logger.LogInformation("Variant {Variant}: {From} -> {To} replicas (mean queue delay {Delay:0.0} ms over {Served} calls){Where}",
            this.GetPrimaryKeyString(), count, target, meanDelay, served, where is null ? "" : $"; the new one on {where}");
    }

    private bool _noRoomLogged;

    private IInferenceReplicaGrain Replica(int index) => GrainFactory.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(this.GetPrimaryKeyString(), index));

    /// <summary>The eligible silo with the fewest of this variant's replicas, below <see cref="ServingOptions.MaxReplicasPerSilo"/>; null if none.</summary>
    private SiloAddress? Fewest(SiloAddress[] eligible, IReadOnlyList<string> replicaSilos) =>
        eligible
            .Select(s => (Silo: s, Replicas: replicaSilos.Count(r => r == s.ToString())))
            .Where(s => s.Replicas < serving.MaxReplicasPerSilo)
            .OrderBy(s => s.Replicas)
            .Select(s => s.Silo)
            .FirstOrDefault();

    /// <summary>
    /// A replica to move: the highest-numbered one on a silo that holds more than
    /// <see cref="ServingOptions.MaxReplicasPerSilo"/> of them (or that is not eligible), when an eligible silo has room; else null.
    /// </summary>
    private (int Index, SiloAddress To)? Crowded(SiloAddress[] eligible, IReadOnlyList<string> replicaSilos)
    {
        if (Fewest(eligible, replicaSilos) is not { } to) return null;
        var names = eligible.Select(e => e.ToString()).ToHashSet();
        for (int i = replicaSilos.Count - 1; i >= 0; i--)
            if (!names.Contains(replicaSilos[i]) || replicaSilos.Count(r => r == replicaSilos[i]) > serving.MaxReplicasPerSilo)
                return (i, to);
        return null;
    }

    /// <summary>
    /// Activates replica <paramref name="index"/> on <paramref name="silo"/> and loads its model; returns where it runs. An
    /// activation elsewhere (left from a scale-down, or to be moved) is retired first: new calls to it are then placed by the hint.
    /// </summary>
    private async Task<string> PlaceReplicaAsync(int index, SiloAddress silo)
    {
        var replica = Replica(index);
        var at = await GpuSilos.PlaceOnAsync(silo, replica.Warm);
        for (int attempt = 0; at != silo.ToString() && attempt < 3; attempt++)
        {
            await replica.Retire();
            at = await GpuSilos.PlaceOnAsync(silo, replica.Warm);
        }
        return at;
    }

    private VariantInfo? Info()
    {
        var s = state.State;
        if (s.Spec is null || s.Job is null) return null;
        var error = s.Job.Error ?? (s.Stage == VariantStage.Pending ? Waiting : null);
        return new VariantInfo(this.GetPrimaryKeyString(), s.Spec, s.Stage, s.Job.Progress, s.Metrics, error,
            s.Job.Artifacts.GetValueOrDefault(Shrunk), s.CreatedAt, s.UpdatedAt, s.Job.History.ToList(), s.Settings);
    }

    protected override void OnStageStarted(string stage) => state.State.Stage = Enum.Parse<VariantStage>(stage);

    protected override JobWork WorkFor(string stage)
    {
        var s = state.State;
        var a = s.Job!.Artifacts;
        Dictionary<string, string> Inputs(params (string Role, string Key)[] roles) => roles.ToDictionary(r => r.Role, r => a[r.Key]);
        var (kind, inputs) = Enum.Parse<VariantStage>(stage) switch
        {
            VariantStage.TeacherFineTune => (JobKind.FineTune, Inputs(("init", "teacher"), (JobArtifacts.Dataset, JobArtifacts.Dataset))),
            VariantStage.Prune => (JobKind.Prune, Inputs(("student", "student"), ("teacher", TeacherTask), (JobArtifacts.Dataset, JobArtifacts.Dataset))),
            VariantStage.Shrink => (JobKind.Shrink, Inputs((JobArtifacts.Pruned, JobArtifacts.Pruned), (JobArtifacts.Dataset, JobArtifacts.Dataset))),
            VariantStage.Evaluate => (JobKind.Evaluate, Inputs(("model", Shrunk), ("teacher", TeacherTask), (JobArtifacts.Dataset, JobArtifacts.Dataset))),
            _ => throw new InvalidOperationException($"Stage {stage} has no work."),
        };
        return new JobWork(stage, kind, s.Spec!.Task, inputs, null, s.Spec.TargetSparsity, s.Settings, null, 0);
    }

    protected override string? Advance(string stage, JobOutput output)
    {
        var s = state.State;
        var a = s.Job!.Artifacts;
        switch (Enum.Parse<VariantStage>(stage))
        {
            case VariantStage.TeacherFineTune:
                a[TeacherTask] = output.Artifact ?? throw new InvalidOperationException("Fine-tuning returned no model.");
                return nameof(VariantStage.Prune);
            case VariantStage.Prune:
                a[JobArtifacts.Pruned] = output.Artifact ?? throw new InvalidOperationException("Pruning returned no run.");
                return nameof(VariantStage.Shrink);
            case VariantStage.Shrink:
                a[Shrunk] = output.Artifact ?? throw new InvalidOperationException("The shrink returned no model.");
                s.KeptHeads = output.KeptHeads?.ToDictionary() ?? [];
                s.KeptNeurons = output.KeptNeurons?.ToDictionary() ?? [];
                s.Stem = output.Stem;
                return nameof(VariantStage.Evaluate);
            default:
                s.Metrics = (output.Metrics ?? throw new InvalidOperationException("The evaluation returned no metrics.")) with
                {
                    KeptHeads = s.KeptHeads, KeptNeurons = s.KeptNeurons, Stem = s.Stem,
                };
                a.Remove(JobArtifacts.Pruned); // it lived in the job's scope, deleted with it
                s.Stage = VariantStage.Ready;
                return null;
        }
    }

    protected override void OnFailed(string reason) => state.State.Stage = VariantStage.Failed;
}
