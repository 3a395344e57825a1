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
    [Id(3)] public Dictionary<string, AliasInfo> Aliases { get; set; } = new(StringComparer.Ordinal);
    [Id(4)] public Dictionary<string, GalleryInfo> Galleries { get; set; } = new(StringComparer.Ordinal);
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
                info = await variant.Start(spec, settings); // validates first
            }
            catch (Exception e) when (e is not ArgumentException)
            {
                // Start saved the variant before it failed to reach a runner (no GPU silo, a timeout): it exists and its
                // watchdog keeps trying, so catalogue it, then tell the caller. Refused specs (ArgumentException) are not saved.
                if (await variant.Get() is not null)
                {
                    state.State.Variants.Add(id);
                    await state.WriteStateAsync();
                }
                throw;
            }
            state.State.Variants.Add(id);
            await state.WriteStateAsync();
            return info;
        }
        return await variant.Start(spec, settings); // idempotent: returns where it is; refuses other budgets
    }

    public Task<VariantInfo?> GetVariant(string id) =>
        state.State.Variants.Contains(id) ? GrainFactory.GetGrain<IVariantGrain>(id).Get() : Task.FromResult<VariantInfo?>(null);

    public async Task<IReadOnlyList<VariantInfo>> ListVariants() =>
        (await Task.WhenAll(state.State.Variants.Select(id => GrainFactory.GetGrain<IVariantGrain>(id).Get()))).OfType<VariantInfo>().ToList();

    public async Task RemoveCompactModel(string id)
    {
        Identifiers.Validate(id, "compact model id");
        if (!state.State.CompactModels.Contains(id)) throw new ArgumentException($"No compact model '{id}'.");
        var variants = (await ListVariants()).Where(v => v.Spec.CompactModel == id).Select(v => $"'{v.Id}'").ToList();
        if (variants.Count > 0)
            throw new ArgumentException($"Compact model '{id}' has variants {string.Join(", ", variants)}: remove them first.");
        await GrainFactory.GetGrain<ICompactModelGrain>(id).Remove();
        state.State.CompactModels.Remove(id);
        await state.WriteStateAsync();
    }

    public async Task RemoveVariant(string id)
    {
        Identifiers.Validate(id, "variant id");
        if (!state.State.Variants.Contains(id)) throw new UnknownVariantException($"No variant '{id}'.");
        var aliases = state.State.Aliases.Values.Where(a => a.Variant == id).Select(a => $"'{a.Alias}'").ToList();
        if (aliases.Count > 0)
            throw new ArgumentException($"Variant '{id}' is behind alias {string.Join(", ", aliases)}: move the alias to another variant first.");
        await GrainFactory.GetGrain<IVariantGrain>(id).Remove();
        state.State.Variants.Remove(id);
        await state.WriteStateAsync();
    }

    public async Task<AliasInfo> SetAlias(string alias, string variant)
    {
        Identifiers.Validate(alias, "alias");
        Identifiers.Validate(variant, "variant id");
        if (state.State.Variants.Contains(alias)) throw new ArgumentException($"'{alias}' is a variant id; an alias needs another name.");
        if (!state.State.Variants.Contains(variant)) throw new UnknownVariantException($"No variant '{variant}'.");
        var serving = await GrainFactory.GetGrain<IVariantGrain>(variant).Serving(); // throws when not ready
        // Warm every replica before the move: the first call through the alias must not pay for the load.
        await Task.WhenAll(Enumerable.Range(0, serving.Replicas)
            .Select(i => GrainFactory.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(variant, i)).Warm()));
        var previous = state.State.Aliases.GetValueOrDefault(alias);
        var info = new AliasInfo(alias, variant, clock.GetUtcNow(), previous?.Variant);
        state.State.Aliases[alias] = info;
        await state.WriteStateAsync();
        return info;
    }

    public async Task<GalleryInfo> RegisterGallery(string name, string hash, int images, int texts)
    {
        Identifiers.Validate(name, "gallery name");
        Identifiers.ValidateHash(hash, "gallery hash");
        if (images < 1) throw new ArgumentException("A gallery needs at least one image.");
        if (texts < 0) throw new ArgumentException("A gallery cannot have a negative number of texts.");
        var info = new GalleryInfo(name, hash, images, texts, clock.GetUtcNow());
        state.State.Galleries[name] = info;
        await state.WriteStateAsync();
        return info;
    }

    public Task<GalleryInfo?> GetGallery(string name) => Task.FromResult(state.State.Galleries.GetValueOrDefault(name));

    public Task<IReadOnlyList<GalleryInfo>> ListGalleries() =>
        Task.FromResult<IReadOnlyList<GalleryInfo>>(state.State.Galleries.Values.OrderBy(g => g.Name, StringComparer.Ordinal).ToList());

    public Task<IReadOnlyList<AliasInfo>> ListAliases() =>
        Task.FromResult<IReadOnlyList<AliasInfo>>(state.State.Aliases.Values.OrderBy(a => a.Alias, StringComparer.Ordinal).ToList());

    public Task<ServingInfo> Resolve(string variantOrAlias)
    {
        Identifiers.Validate(variantOrAlias, "variant id or alias");
        var variant = state.State.Aliases.TryGetValue(variantOrAlias, out var alias) ? alias.Variant : variantOrAlias;
        if (!state.State.Variants.Contains(variant)) throw new UnknownVariantException($"No variant '{variantOrAlias}'.");
        return GrainFactory.GetGrain<IVariantGrain>(variant).Serving();
    }

    private void RequireDataset(string hash)
    {
        Identifiers.ValidateHash(hash, "dataset hash");
        if (!state.State.Datasets.ContainsKey(hash))
            throw new ArgumentException($"No dataset {hash[..12]}... is registered: upload it first (fleet data upload).");
    }
}
