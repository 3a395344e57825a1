using EfficientVlm.Grains;
using EfficientVlm.Grains.Placement;
using EfficientVlm.Model.Runtime;
using Microsoft.Extensions.DependencyInjection;
using Orleans.TestingHost;

namespace EfficientVlm.Fleet.Tests.Grains;

public interface IPlacedProbeGrain : IGrainWithIntegerKey
{
    Task<string> Silo();
}

/// <summary>A GPU-placed grain for these tests: it only reports where it was activated.</summary>
[GpuPlacement]
public sealed class PlacedProbeGrain(ILocalSiloDetails silo) : Grain, IPlacedProbeGrain
{
    public Task<string> Silo() => Task.FromResult(silo.SiloAddress.ToString());
}

public sealed class GpuPlacementTests
{
    private static async Task<InProcessTestCluster> Cluster(string?[] accelerators, bool allowCpu)
    {
        var builder = new InProcessTestClusterBuilder((short)accelerators.Length);
        builder.ConfigureSilo((options, silo) =>
        {
            int index = int.Parse(options.SiloName.Split('_').Last());
            silo.AddMemoryGrainStorage(FleetStorage.GrainStateProvider);
            silo.Services.AddSingleton(TimeProvider.System);
            silo.Services.AddSingleton(_ => new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu" }));
            silo.AddGpuPlacement(new GpuPlacementOptions { AllowCpuSilos = allowCpu }, accelerators[index] ?? "cpu");
        });
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return cluster;
    }

    [Fact]
    public async Task Gpu_grains_land_only_on_the_gpu_silo_and_without_one_the_error_says_so()
    {
        await using (var cluster = await Cluster(["cpu", "cuda"], allowCpu: false))
        {
            var gpuSilo = cluster.Silos[1].SiloAddress.ToString();
            await Task.Delay(1000); // the metadata cache fills as silos join
            var placed = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => cluster.Client.GetGrain<IPlacedProbeGrain>(i).Silo()));
            Assert.All(placed, s => Assert.Equal(gpuSilo, s));
        }

        await using (var cpuOnly = await Cluster(["cpu"], allowCpu: false))
        {
            var error = await Assert.ThrowsAnyAsync<Exception>(() => cpuOnly.Client.GetGrain<IPlacedProbeGrain>(1).Silo());
            Assert.Contains("No GPU silo is in the cluster", error.ToString());
        }

        await using (var development = await Cluster(["cpu"], allowCpu: true))
            Assert.Equal(development.Silos[0].SiloAddress.ToString(), await development.Client.GetGrain<IPlacedProbeGrain>(2).Silo());
    }

    [Fact]
    public async Task A_placement_hint_puts_a_new_activation_on_the_named_gpu_silo_and_is_ignored_for_a_cpu_silo()
    {
        await using var cluster = await Cluster(["cpu", "cuda", "cuda"], allowCpu: false);
        await Task.Delay(1000); // the metadata cache fills as silos join
        var cpu = cluster.Silos[0].SiloAddress;
        var gpu = cluster.Silos[2].SiloAddress;
        for (int i = 100; i < 110; i++)
            Assert.Equal(gpu.ToString(), await GpuSilos.PlaceOnAsync(gpu, () => cluster.Client.GetGrain<IPlacedProbeGrain>(i).Silo()));
        for (int i = 200; i < 210; i++)
            Assert.NotEqual(cpu.ToString(), await GpuSilos.PlaceOnAsync(cpu, () => cluster.Client.GetGrain<IPlacedProbeGrain>(i).Silo()));
        // an activation that exists stays where it is
        Assert.Equal(gpu.ToString(), await GpuSilos.PlaceOnAsync(cluster.Silos[1].SiloAddress, () => cluster.Client.GetGrain<IPlacedProbeGrain>(100).Silo()));
    }
}
