using EfficientVlm.Grains.Abstractions;

namespace EfficientVlm.Grains;

/// <summary>Persistent state of the registry (grain storage "fleet"; renaming this type breaks old state).</summary>
[GenerateSerializer]
public sealed class FleetRegistryState
{
    [Id(0)] public Dictionary<string, CompactModelInfo> CompactModels { get; set; } = new(StringComparer.Ordinal);
}

public sealed class FleetRegistryGrain(
    [PersistentState("registry", FleetStorage.GrainStateProvider)] IPersistentState<FleetRegistryState> state,
    TimeProvider clock) : Grain, IFleetRegistryGrain
{
    public async Task<CompactModelInfo> RegisterCompactModel(CompactModelRegistration registration)
    {
        ArgumentNullException.ThrowIfNull(registration);
        Identifiers.Validate(registration.Id, "compact model id");
        if (string.IsNullOrWhiteSpace(registration.Preset))
            throw new ArgumentException("A compact model needs a preset name.");
        if (state.State.CompactModels.TryGetValue(registration.Id, out var existing))
            return existing;

        var info = new CompactModelInfo(registration.Id, registration.Preset, registration.ArtifactHash, clock.GetUtcNow());
        state.State.CompactModels[registration.Id] = info;
        await state.WriteStateAsync();
        return info;
    }

    public Task<CompactModelInfo?> GetCompactModel(string id) =>
        Task.FromResult(state.State.CompactModels.GetValueOrDefault(id));

    public Task<IReadOnlyList<CompactModelInfo>> ListCompactModels() =>
        Task.FromResult<IReadOnlyList<CompactModelInfo>>(
            state.State.CompactModels.Values.OrderBy(m => m.Id, StringComparer.Ordinal).ToList());
}
