using EfficientVlm.Grains;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Model.Runtime;
using Microsoft.Extensions.DependencyInjection;
using Orleans.TestingHost;

namespace EfficientVlm.Fleet.Tests.Grains;

/// <summary>An in-process cluster with memory storage: grain logic without processes or Azurite.</summary>
public sealed class InProcessClusterFixture : IAsyncLifetime
{
    public InProcessTestCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        var builder = new InProcessTestClusterBuilder(1);
        builder.ConfigureSilo((_, silo) =>
        {
            silo.AddMemoryGrainStorage(FleetStorage.GrainStateProvider);
            silo.Services.AddSingleton(TimeProvider.System);
            silo.Services.AddSingleton(_ => new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu" }));
        });
        Cluster = builder.Build();
        await Cluster.DeployAsync();
    }

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

[Collection(TorchCollection.Name)]
public sealed class FleetRegistryGrainTests(InProcessClusterFixture fixture) : IClassFixture<InProcessClusterFixture>
{
    private IFleetRegistryGrain Registry(string key) => fixture.Cluster.Client.GetGrain<IFleetRegistryGrain>(key);

    [Fact]
    public async Task Registering_is_idempotent_by_id_and_listing_is_sorted()
    {
        var registry = Registry("idempotent");
        var first = await registry.RegisterCompactModel(new CompactModelRegistration("b-model", "tiny", null));
        var again = await registry.RegisterCompactModel(new CompactModelRegistration("b-model", "demo", "x"));
        await registry.RegisterCompactModel(new CompactModelRegistration("a-model", "demo", null));

        Assert.Equal(first, again);
        Assert.Equal(["a-model", "b-model"], (await registry.ListCompactModels()).Select(m => m.Id));
        Assert.Null(await registry.GetCompactModel("missing"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("Upper")]
    [InlineData("has space")]
    [InlineData("-leading-dash")]
    public async Task Malformed_ids_are_refused_with_a_clear_message(string id)
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() =>
            Registry("bad-ids").RegisterCompactModel(new CompactModelRegistration(id, "tiny", null)));
        Assert.Contains("compact model id", e.Message);
        Assert.Empty(await Registry("bad-ids").ListCompactModels());
    }

    [Fact]
    public async Task The_device_probe_runs_on_the_silo_executor()
    {
        var result = await fixture.Cluster.Client.GetGrain<IDeviceProbeGrain>(0).Probe();
        Assert.Equal(55f, result.MatmulTrace);
        Assert.Equal("cpu", result.Device);
    }
}
