using System.Diagnostics;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Model.Runtime;
using Orleans.Concurrency;
using TorchSharp;

namespace EfficientVlm.Grains;

[StatelessWorker]
public sealed class DeviceProbeGrain(DeviceExecutor executor, ILocalSiloDetails silo) : Grain, IDeviceProbeGrain
{
    /// <summary>What <see cref="TraceAsync"/> gives on a device that computes right: the sum of the squares 0..5.</summary>
    public const float ExpectedTrace = 55f;

    /// <summary>A small computation on the executor's device: trace(A A^T) for A = arange(6) as 2x3.</summary>
    public static Task<float> TraceAsync(DeviceExecutor executor, CancellationToken cancellationToken = default) =>
        executor.RunAsync(ctx =>
        {
            var a = torch.arange(6, dtype: torch.float32, device: ctx.Device).reshape(2, 3);
            return a.mm(a.t()).trace().item<float>();
        }, cancellationToken: cancellationToken);

    public async Task<DeviceProbeResult> Probe()
    {
        var watch = Stopwatch.StartNew();
        var trace = await TraceAsync(executor);
        return new DeviceProbeResult(silo.SiloAddress.ToString(), executor.Device.ToString(),
            TorchRuntime.EnsureLoaded(), trace, watch.Elapsed.TotalMilliseconds);
    }
}
