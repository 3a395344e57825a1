using System.Diagnostics;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Model.Runtime;
using Orleans.Concurrency;
using TorchSharp;

namespace EfficientVlm.Grains;

[StatelessWorker]
public sealed class DeviceProbeGrain(DeviceExecutor executor, ILocalSiloDetails silo) : Grain, IDeviceProbeGrain
{
    public async Task<DeviceProbeResult> Probe()
    {
        var watch = Stopwatch.StartNew();
        // trace(A @ A^T) for A = arange(6) as 2x3 = sum of squares 0..5 = 55.
        var trace = await executor.RunAsync(ctx =>
        {
            var a = torch.arange(6, dtype: torch.float32, device: ctx.Device).reshape(2, 3);
            return a.mm(a.t()).trace().item<float>();
        });
        return new DeviceProbeResult(silo.SiloAddress.ToString(), executor.Device.ToString(),
            TorchRuntime.EnsureLoaded(), trace, watch.Elapsed.TotalMilliseconds);
    }
}
