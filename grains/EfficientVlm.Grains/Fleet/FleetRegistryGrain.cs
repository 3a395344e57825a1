using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Grains.Placement;

namespace EfficientVlm.Grains.Fleet;

/// <summary>Persistent state of the registry (grain storage "fleet"; renaming this type breaks old state).</summary>
[GenerateSerializer]
public sealed class FleetRegistryState
{
    [Id(0)] public Dictionary<string, DatasetInfo> Datasets { get; set; } = new(StringComparer.Ordinal);
    [Id(1)] public SortedSet<string> CompactModels { get; set; } = new(StringComparer.Ordinal);
    [Id(2)] public SortedSet<string> Variants { get; set; } = new(StringComparer.Ordinal);
}

/// <summary>
/// The catalogue. It holds ids only; each compact model and variant is its own grain. Calls are
/// handled one at a time (a non-reentrant grain), so concurrent identical <see cref="EnsureVariant"/>
/// requests are ordered here and all meet the one variant grain whose id the spec gives.
/// </summary>
public sealed class FleetRegistryGrain(
    [PersistentState("registry", FleetStorage.GrainStateProvider)] IPersistentState<FleetRegistryState> state,
    TimeProvider clock) : Grain, IFleetRegistryGrain
{
    public async Task<DatasetInfo> RegisterDataset(DatasetRegistration registration)
    {
        ArgumentNullException.ThrowIfNull(registration);
        Identifiers.Validate(registration.Name, "dataset name");
        Identifiers.ValidateHash(registration.Hash, "dataset hash");
        if (registration.Files < 1 || registration.Bytes < 0) throw new ArgumentException("A dataset has at least one file.");
        if (state.State.Datasets.TryGetValue(registration.Hash, out var existing)) return existing;
        var info = new DatasetInfo(registration.Name, registration.Hash, registration.Files, registration.Bytes, clock.GetUtcNow());
        state.State.Datasets[registration.Hash] = info;
        await state.WriteStateAsync();
        return info;
    }

    public Task<IReadOnlyList<DatasetInfo>> ListDatasets() =>
        Task.FromResult<IReadOnlyList<DatasetInfo>>(state.State.Datasets.Values.OrderBy(d => d.RegisteredAt).ToList());

    public async Task<CompactModelInfo> RegisterCompactModel(CompactModelRegistration registration)
    {
        ArgumentNullException.ThrowIfNull(registration);
        Identifiers.Validate(registration.Id, "compact model id");
        if (!state.State.CompactModels.Contains(registration.Id))
        {
            Fleet.CompactModelGrain.Validate(registration);
            if (registration.Dataset is { } dataset) RequireDataset(dataset);
            state.State.CompactModels.Add(registration.Id);
            await state.WriteStateAsync();
        }
        return await GrainFactory.GetGrain<ICompactModelGrain>(registration.Id).Create(registration);
    }

    public Task<CompactModelInfo?> GetCompactModel(string id) =>
        state.State.CompactModels.Contains(id) ? GrainFactory.GetGrain<ICompactModelGrain>(id).Get() : Task.FromResult<CompactModelInfo?>(null);

    public async Task<IReadOnlyList<CompactModelInfo>> ListCompactModels() =>
        (await Task.WhenAll(state.State.CompactModels.Select(id => GrainFactory.GetGrain<ICompactModelGrain>(id).Get())))
        .OfType<CompactModelInfo>().ToList();

    public async Task<VariantInfo> EnsureVariant(VariantSpec spec, JobSettings? settings)
    {
        ArgumentNullException.ThrowIfNull(spec);
        Identifiers.Validate(spec.CompactModel, "compact model id");
        if (!state.State.CompactModels.Contains(spec.CompactModel))
            throw new ArgumentException($"No compact model '{spec.CompactModel}' is registered (known: {string.Join(", ", state.State.CompactModels)}).");
        RequireDataset(spec.Dataset);
        var id = spec.VariantId;
        Identifiers.Validate(id, "variant id");
        var variant = GrainFactory.GetGrain<IVariantGrain>(id);
        if (!state.State.Variants.Contains(id))
        {
            VariantInfo info;
            try
            {
                info = await variant.Start(spec, settings ?? new JobSettings()); // validates first
            }
            catch (NoGpuSiloException)
            {
                // the variant exists (Pending, it starts when a GPU silo joins): catalogue it, then tell the caller
                state.State.Variants.Add(id);
                await state.WriteStateAsync();
                throw;
            }
            state.State.Variants.Add(id);
            await state.WriteStateAsync();
            return info;
        }
        return await variant.Start(spec, settings ?? new JobSettings()); // idempotent: returns where it is
    }

    public Task<VariantInfo?> GetVariant(string id) =>
        state.State.Variants.Contains(id) ? GrainFactory.GetGrain<IVariantGrain>(id).Get() : Task.FromResult<VariantInfo?>(null);

    public async Task<IReadOnlyList<VariantInfo>> ListVariants() =>
        (await Task.WhenAll(state.State.Variants.Select(id => GrainFactory.GetGrain<IVariantGrain>(id).Get()))).OfType<VariantInfo>().ToList();

    private void RequireDataset(string hash)
    {
        Identifiers.ValidateHash(hash, "dataset hash");
        if (!state.State.Datasets.ContainsKey(hash))
            throw new ArgumentException($"No dataset {hash[..12]}... is registered: upload it first (fleet data upload).");
    }
}
