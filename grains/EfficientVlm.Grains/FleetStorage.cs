namespace EfficientVlm.Grains;

/// <summary>Names of the storage providers the grains use; the silo registers them.</summary>
public static class FleetStorage
{
    /// <summary>Grain state (Azure Blob in the silo host, memory in unit tests).</summary>
    public const string GrainStateProvider = "fleet";
}
