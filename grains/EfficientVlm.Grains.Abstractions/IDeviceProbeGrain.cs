namespace EfficientVlm.Grains.Abstractions;

/// <summary>
/// Asks a silo's device executor to run a small known computation: proves that the silo loaded
/// libtorch and that grain -> executor -> grain works. Stateless, activated on the silo that gets the call.
/// </summary>
public interface IDeviceProbeGrain : IGrainWithIntegerKey
{
    Task<DeviceProbeResult> Probe();
}

[GenerateSerializer, Immutable]
public sealed record DeviceProbeResult(
    [property: Id(0)] string SiloAddress,
    [property: Id(1)] string Device,
    [property: Id(2)] string Torch,
    [property: Id(3)] float MatmulTrace,
    [property: Id(4)] double ElapsedMilliseconds);
