using Orleans.Concurrency;

namespace EfficientVlm.Grains.Abstractions;

/// <summary>
/// The fleet's catalogue (key <see cref="DefaultKey"/>): datasets, compact models and task variants,
/// and the on-demand entry point <see cref="EnsureVariant"/>.
/// </summary>
public interface IFleetRegistryGrain : IGrainWithStringKey
{
    public const string DefaultKey = "default";

    /// <summary>Records an uploaded dataset (a <c>dataset</c> artefact); idempotent by hash.</summary>
    /// <exception cref="ArgumentException">The name or hash is malformed.</exception>
    Task<DatasetInfo> RegisterDataset(DatasetRegistration registration);

    Task<IReadOnlyList<DatasetInfo>> ListDatasets();

    /// <summary>
    /// Adds a compact model, or returns the one already registered under the same id. With a student
    /// checkpoint it is ready at once; without one, a distillation job makes it from the teacher.
    /// </summary>
    /// <exception cref="ArgumentException">The id, preset or an artefact hash is malformed, or the dataset is unknown.</exception>
    Task<CompactModelInfo> RegisterCompactModel(CompactModelRegistration registration);

    Task<CompactModelInfo?> GetCompactModel(string id);

    Task<IReadOnlyList<CompactModelInfo>> ListCompactModels();

    /// <summary>Removes a compact model, distilling or not (see <see cref="ICompactModelGrain.Remove"/>).</summary>
    /// <exception cref="ArgumentException">No such model, or variants are made from it (remove them first).</exception>
    Task RemoveCompactModel(string id);

    /// <summary>
    /// Returns the variant for <paramref name="spec"/>, ready or in progress, or starts it. Concurrent
    /// identical requests meet at one variant (its id is derived from the spec).
    /// </summary>
    /// <exception cref="ArgumentException">Unknown compact model or dataset, a model that is not ready, or a bad target.</exception>
    Task<VariantInfo> EnsureVariant(VariantSpec spec, JobSettings? settings);

    Task<VariantInfo?> GetVariant(string id);

    Task<IReadOnlyList<VariantInfo>> ListVariants();

    /// <summary>
    /// Points <paramref name="alias"/> at a ready variant, after warming it (each replica loads its model),
    /// so callers of the alias never meet a cold or unready variant; a later call moves it.
    /// </summary>
    /// <exception cref="ArgumentException">Malformed alias, an alias that is a variant id, or a variant that is not ready.</exception>
    Task<AliasInfo> SetAlias(string alias, string variant);

    /// <summary>Removes a variant, running or not (see <see cref="IVariantGrain.Remove"/>); asking for its spec again makes it anew.</summary>
    /// <exception cref="ArgumentException">No such variant, or an alias points at it (move the alias first).</exception>
    Task RemoveVariant(string id);

    Task<IReadOnlyList<AliasInfo>> ListAliases();

    /// <summary>Registers an uploaded retrieval gallery under a name (a new upload under the same name replaces it).</summary>
    /// <exception cref="ArgumentException">Malformed name or hash, or no images.</exception>
    Task<GalleryInfo> RegisterGallery(string name, string hash, int images, int texts);

    [AlwaysInterleave]
    Task<GalleryInfo?> GetGallery(string name);

    Task<IReadOnlyList<GalleryInfo>> ListGalleries();

    /// <summary>How to call <paramref name="variantOrAlias"/> now (an alias is followed to its variant).</summary>
    /// <exception cref="ArgumentException">No such variant or alias, or the variant is not ready.</exception>
    [AlwaysInterleave] // read-only and on every cold call path: never queue behind a SetAlias that is warming replicas
    Task<ServingInfo> Resolve(string variantOrAlias);
}

[GenerateSerializer, Immutable]
public sealed record AliasInfo(
    [property: Id(0)] string Alias,
    [property: Id(1)] string Variant,
    [property: Id(2)] DateTimeOffset Since,
    [property: Id(3)] string? Previous);

[GenerateSerializer, Immutable]
public sealed record DatasetRegistration(
    [property: Id(0)] string Name,
    [property: Id(1)] string Hash,
    [property: Id(2)] int Files,
    [property: Id(3)] long Bytes);

[GenerateSerializer, Immutable]
public sealed record DatasetInfo(
    [property: Id(0)] string Name,
    [property: Id(1)] string Hash,
    [property: Id(2)] int Files,
    [property: Id(3)] long Bytes,
    [property: Id(4)] DateTimeOffset RegisteredAt);

/// <summary>
/// What a caller asks to register: the id, the student preset, the pre-trained teacher (a <c>model</c>
/// artefact hash; variants fine-tune it for their task), and either the distilled student or the
/// dataset to distil it on. <see cref="TaskTeachers"/>: teachers already fine-tuned for a task (model hashes,
/// such as the shipped models/shapesworld packages); a variant of such a task is pruned with KD from it
/// and skips fine-tuning the teacher.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record CompactModelRegistration(
    [property: Id(0)] string Id,
    [property: Id(1)] string Preset,
    [property: Id(2)] string Teacher,
    [property: Id(3)] string? Student = null,
    [property: Id(4)] string? Dataset = null,
    [property: Id(5)] JobSettings? Settings = null,
    [property: Id(6)] Dictionary<FleetTask, string>? TaskTeachers = null);

public enum CompactModelStatus
{
    Distilling,
    Ready,
    Failed,
}

/// <summary>A compact model as its grain holds it (ids and hashes only: weights live in blob storage).</summary>
[GenerateSerializer, Immutable]
public sealed record CompactModelInfo(
    [property: Id(0)] string Id,
    [property: Id(1)] string Preset,
    [property: Id(2)] CompactModelStatus Status,
    [property: Id(3)] string Teacher,
    [property: Id(4)] string? Student,
    [property: Id(5)] string? Dataset,
    [property: Id(6)] JobProgress? Progress,
    [property: Id(7)] string? Error,
    [property: Id(8)] DateTimeOffset RegisteredAt,
    [property: Id(9)] IReadOnlyList<JobEvent> History,
    [property: Id(10)] Dictionary<FleetTask, string>? TaskTeachers = null);

/// <summary>The task-agnostic compact VLM (key: its id): its artefacts and the distillation job that makes it.</summary>
public interface ICompactModelGrain : IGrainWithStringKey
{
    /// <summary>Registers the model (idempotent); starts distillation when no student is given.</summary>
    Task<CompactModelInfo> Create(CompactModelRegistration registration);

    /// <summary>Null when nothing was registered under this id.</summary>
    Task<CompactModelInfo?> Get();

    /// <summary>Forgets the model: its distillation job is discarded (if any) and its state cleared; stored models stay.</summary>
    /// <exception cref="ArgumentException">Nothing registered under this id.</exception>
    Task Remove();
}
