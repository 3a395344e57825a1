using EfficientVlm.Artifacts;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Grains.Jobs;
using EfficientVlm.Model.Config;
using Microsoft.Extensions.Logging;

namespace EfficientVlm.Grains.Fleet;

/// <summary>Persistent state of a compact model (grain storage "fleet"; renaming this type breaks old state).</summary>
[GenerateSerializer]
public sealed class CompactModelState
{
    [Id(0)] public CompactModelRegistration? Registration { get; set; }
    [Id(1)] public CompactModelStatus Status { get; set; }
    [Id(2)] public string? Student { get; set; }
    [Id(3)] public JobState? Job { get; set; }
    [Id(4)] public DateTimeOffset RegisteredAt { get; set; }
}

/// <summary>
/// The task-agnostic compact VLM. Registered with its distilled student it is ready at once;
/// registered with a pre-trained teacher and a dataset, a fleet job distils the student
/// (method.md section 3) and the model is ready when that job is done.
/// </summary>
public sealed class CompactModelGrain(
    [PersistentState("compact-model", FleetStorage.GrainStateProvider)] IPersistentState<CompactModelState> state,
    BlobArtifactStore store, FleetJobOptions options, TimeProvider clock, ILogger<CompactModelGrain> logger)
    : JobOwnerGrain(store, options, clock, logger), ICompactModelGrain
{
    private const string Stage = "Distill";

    protected override JobState? Job => state.State.Job;

    protected override Task SaveAsync() => state.WriteStateAsync();

    public async Task Remove()
    {
        if (state.State.Registration is null) throw new ArgumentException($"No compact model '{this.GetPrimaryKeyString()}'.");
        await DiscardJobAsync("removed");
        logger.LogInformation("Compact model {Model} removed (was {Status})", this.GetPrimaryKeyString(), state.State.Status);
        await state.ClearStateAsync();
        DeactivateOnIdle();
    }

    public async Task<CompactModelInfo> Create(CompactModelRegistration registration)
    {
        ArgumentNullException.ThrowIfNull(registration);
        if (registration.Id != this.GetPrimaryKeyString())
            throw new ArgumentException($"Compact model '{this.GetPrimaryKeyString()}' cannot be registered as '{registration.Id}'.");
        if (state.State.Registration is not null)
        {
            // registering a failed model again retries its distillation from the last checkpoint
            await RetryIfFailedAsync(() => state.State.Status = CompactModelStatus.Distilling);
            return Info()!;
        }
        Validate(registration);

        state.State.Registration = registration;
        state.State.RegisteredAt = Now;
        if (registration.Student is not null)
        {
            state.State.Status = CompactModelStatus.Ready;
            state.State.Student = registration.Student;
            await SaveAsync();
            return Info()!;
        }
        state.State.Status = CompactModelStatus.Distilling;
        state.State.Job = new JobState
        {
            Stage = Stage,
            Artifacts = { ["teacher"] = registration.Teacher, [JobArtifacts.Dataset] = registration.Dataset! },
        };
        await SaveAsync();
        await StartJobAsync();
        return Info()!;
    }

    /// <exception cref="ArgumentException">What is wrong with the registration.</exception>
    public static void Validate(CompactModelRegistration r)
    {
        Identifiers.Validate(r.Id, "compact model id");
        Presets.Get(r.Preset); // throws with the known names
        Identifiers.ValidateHash(r.Teacher, "teacher model hash");
        if (r.Student is not null) Identifiers.ValidateHash(r.Student, "student model hash");
        else if (r.Dataset is null) throw new ArgumentException("Without a student checkpoint, a compact model needs a dataset to distil it on.");
        else Identifiers.ValidateHash(r.Dataset, "dataset hash");
        foreach (var (task, hash) in r.TaskTeachers ?? [])
        {
            if (!Enum.IsDefined(task)) throw new ArgumentException($"Unknown task {task} among the task teachers.");
            Identifiers.ValidateHash(hash, $"{task.ToString().ToLowerInvariant()} teacher model hash");
        }
        (r.Settings ?? new JobSettings()).ToPipeline();
    }

    public Task<CompactModelInfo?> Get() => Task.FromResult(Info());

    private CompactModelInfo? Info()
    {
        var s = state.State;
        if (s.Registration is not { } r) return null;
        return new CompactModelInfo(r.Id, r.Preset, s.Status, r.Teacher, s.Student, r.Dataset, s.Job?.Progress,
            s.Job?.Error ?? (s.Status == CompactModelStatus.Distilling && s.Job?.Runner is null ? Waiting : null),
            s.RegisteredAt, s.Job?.History.ToList() ?? [], r.TaskTeachers);
    }

    protected override JobWork WorkFor(string stage) =>
        new(stage, JobKind.Distill, null, new Dictionary<string, string>(state.State.Job!.Artifacts), state.State.Registration!.Preset, 0,
            state.State.Registration.Settings ?? new JobSettings(), null, 0);

    protected override string? Advance(string stage, JobOutput output)
    {
        state.State.Student = output.Artifact ?? throw new InvalidOperationException("Distillation returned no model.");
        state.State.Status = CompactModelStatus.Ready;
        return null;
    }

    protected override void OnFailed(string reason) => state.State.Status = CompactModelStatus.Failed;
}
