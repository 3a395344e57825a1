namespace EfficientVlm.Grains.Abstractions;

/// <summary>No silo of the cluster can take GPU work (serializable: it travels back to the caller, who can say how to fix it).</summary>
[GenerateSerializer]
public sealed class NoGpuSiloException : OrleansException
{
    public NoGpuSiloException(string message) : base(message)
    {
    }
}
