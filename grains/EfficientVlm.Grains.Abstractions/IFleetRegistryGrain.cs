namespace EfficientVlm.Grains.Abstractions;

/// <summary>
/// The fleet's catalogue (key <see cref="DefaultKey"/>): the task-agnostic compact models it knows.
/// Later: task variants and aliases.
/// </summary>
public interface IFleetRegistryGrain : IGrainWithStringKey
{
    public const string DefaultKey = "default";

    /// <summary>Adds a compact model, or returns the one already registered under the same id.</summary>
    /// <exception cref="ArgumentException">The id or preset is empty or malformed.</exception>
    Task<CompactModelInfo> RegisterCompactModel(CompactModelRegistration registration);

    Task<CompactModelInfo?> GetCompactModel(string id);

    Task<IReadOnlyList<CompactModelInfo>> ListCompactModels();
}

/// <summary>What a caller asks to register.</summary>
[GenerateSerializer, Immutable]
public sealed record CompactModelRegistration(
    [property: Id(0)] string Id,
    [property: Id(1)] string Preset,
    [property: Id(2)] string? ArtifactHash);

/// <summary>A compact model as the registry holds it (ids and hashes only: weights live in blob storage).</summary>
[GenerateSerializer, Immutable]
public sealed record CompactModelInfo(
    [property: Id(0)] string Id,
    [property: Id(1)] string Preset,
    [property: Id(2)] string? ArtifactHash,
    [property: Id(3)] DateTimeOffset RegisteredAt);
