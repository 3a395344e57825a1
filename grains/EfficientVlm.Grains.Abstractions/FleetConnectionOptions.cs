namespace EfficientVlm.Grains.Abstractions;

/// <summary>
/// How silos and clients find the cluster and its storage. Bound from configuration section
/// <c>Fleet</c> (environment: <c>Fleet__ClusterId</c>, <c>Fleet__StorageConnectionString</c>, ...).
/// </summary>
public sealed record FleetConnectionOptions
{
    public const string SectionName = "Fleet";

    /// <summary>Orleans cluster id: silos and clients with the same id form one cluster.</summary>
    public string ClusterId { get; init; } = "efficientvlm-dev";

    /// <summary>Orleans service id: keys persistent state and reminders; keep it stable across deployments.</summary>
    public string ServiceId { get; init; } = "efficientvlm-fleet";

    /// <summary>Azure Storage connection string (Azure Table membership, reminders; Azure Blob state and artefacts).
    /// The default points at Azurite on its standard ports.</summary>
    public string StorageConnectionString { get; init; } = "UseDevelopmentStorage=true";

    /// <summary><c>AzureStorage</c> (default) or <c>Localhost</c> (single-process development and unit tests only).</summary>
    public string Clustering { get; init; } = "AzureStorage";

    /// <summary>Blob container of the model artefacts (datasets, checkpoints, shrunk models), content-addressed.</summary>
    public string ArtifactContainer { get; init; } = "artifacts";

    /// <summary>
    /// Blob container of the grain state (registry, compact models, variants, job owners). Orleans names state
    /// blobs by grain type and key, not by service id, so two fleets on one storage account need two containers.
    /// </summary>
    public string GrainStateContainer { get; init; } = "grainstate";

    /// <summary>Gateway port for <c>Localhost</c> clustering.</summary>
    public int LocalhostGatewayPort { get; init; } = 30000;

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ClusterId)) throw new ArgumentException("Fleet:ClusterId is empty.");
        if (string.IsNullOrWhiteSpace(ServiceId)) throw new ArgumentException("Fleet:ServiceId is empty.");
        if (Clustering is not ("AzureStorage" or "Localhost"))
            throw new ArgumentException($"Fleet:Clustering must be AzureStorage or Localhost (was '{Clustering}').");
        ValidateContainer(ArtifactContainer, "Fleet:ArtifactContainer");
        ValidateContainer(GrainStateContainer, "Fleet:GrainStateContainer");
        if (ArtifactContainer == GrainStateContainer)
            throw new ArgumentException($"Fleet:ArtifactContainer and Fleet:GrainStateContainer are both '{ArtifactContainer}'; they must differ.");
        if (Clustering == "AzureStorage" && string.IsNullOrWhiteSpace(StorageConnectionString))
            throw new ArgumentException("Fleet:StorageConnectionString is empty.");
    }

    private static void ValidateContainer(string? name, string setting)
    {
        if (!System.Text.RegularExpressions.Regex.IsMatch(name ?? "", "^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$"))
            throw new ArgumentException($"{setting} '{name}' is not a blob container name (3-63 lower-case letters, digits and single hyphens).");
    }
}
