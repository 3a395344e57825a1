using Azure.Storage.Blobs;
using EfficientVlm.Artifacts;
using EfficientVlm.Grains;
using EfficientVlm.Grains.Jobs;
using EfficientVlm.Grains.Placement;
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
            // never contacted here: no job starts (registrations below carry their student)
            silo.AddFleetJobs(new FleetJobOptions(), _ => new BlobArtifactStore(new BlobServiceClient("UseDevelopmentStorage=true")));
            silo.AddGpuPlacement(new GpuPlacementOptions(), "cpu");
            silo.UseInMemoryReminderService();
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

    private static readonly string Teacher = new('a', 64), Student = new('b', 64);

    [Fact]
    public async Task Registering_is_idempotent_by_id_and_listing_is_sorted()
    {
        var registry = Registry("idempotent");
        var first = await registry.RegisterCompactModel(new CompactModelRegistration("b-model", "tiny", Teacher, Student));
        var again = await registry.RegisterCompactModel(new CompactModelRegistration("b-model", "demo", Teacher, new string('c', 64)));
        await registry.RegisterCompactModel(new CompactModelRegistration("a-model", "demo", Teacher, Student));

        Assert.Equal(CompactModelStatus.Ready, first.Status);
        Assert.Equal((first.Preset, first.Student, first.RegisteredAt), (again.Preset, again.Student, again.RegisteredAt));
        Assert.Equal(["a-model", "b-model"], (await registry.ListCompactModels()).Select(m => m.Id));
        Assert.Null(await registry.GetCompactModel("missing"));
    }

    [Fact]
    public async Task Fleet_errors_reach_the_caller_as_their_own_types_and_as_what_callers_caught_before()
    {
        var unknown = await Assert.ThrowsAsync<UnknownVariantException>(() => Registry("typed").Resolve("no-such-variant"));
        Assert.Equal("No variant 'no-such-variant'.", unknown.Message);
        Assert.IsAssignableFrom<ArgumentException>(unknown);

        // every kind through the cluster's own serializer, as a grain's exception travels
        var serializer = fixture.Cluster.Client.ServiceProvider.GetRequiredService<Orleans.Serialization.Serializer>();
        Exception[] kinds = [new UnknownVariantException("u"), new NotReadyException("n"), new ReplicaBusyException("b"), new NoGpuSiloException("g")];
        foreach (var kind in kinds)
        {
            var back = serializer.Deserialize<Exception>(serializer.SerializeToArray<Exception>(kind))!;
            Assert.Equal(kind.GetType(), back.GetType());
            Assert.Equal(kind.Message, back.Message);
        }
        Assert.IsAssignableFrom<ArgumentException>(kinds[1]);
        Assert.IsAssignableFrom<InvalidOperationException>(kinds[2]);
    }

    [Theory]
    [InlineData("", "tiny", "compact model id")]
    [InlineData("Upper", "tiny", "compact model id")]
    [InlineData("has space", "tiny", "compact model id")]
    [InlineData("-leading-dash", "tiny", "compact model id")]
    [InlineData("fine-id", "no-such-preset", "Unknown model preset")]
    public async Task Malformed_registrations_are_refused_with_a_clear_message(string id, string preset, string message)
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() =>
            Registry("bad-ids").RegisterCompactModel(new CompactModelRegistration(id, preset, Teacher, Student)));
        Assert.Contains(message, e.Message);
        Assert.Empty(await Registry("bad-ids").ListCompactModels());
    }

    [Fact]
    public async Task Bad_hashes_unknown_datasets_and_models_are_refused_before_anything_starts()
    {
        var registry = Registry("refusals");
        var e = await Assert.ThrowsAsync<ArgumentException>(() => registry.RegisterCompactModel(new CompactModelRegistration("m", "tiny", "not-a-hash", Student)));
        Assert.Contains("teacher model hash", e.Message);
        e = await Assert.ThrowsAsync<ArgumentException>(() => registry.RegisterCompactModel(new CompactModelRegistration("m", "tiny", Teacher)));
        Assert.Contains("needs a dataset", e.Message);
        e = await Assert.ThrowsAsync<ArgumentException>(() => registry.RegisterCompactModel(new CompactModelRegistration("m", "tiny", Teacher, Dataset: new string('d', 64))));
        Assert.Contains("No dataset", e.Message);

        await registry.RegisterDataset(new DatasetRegistration("shapes", new string('d', 64), 3, 100));
        await registry.RegisterCompactModel(new CompactModelRegistration("m", "tiny", Teacher, Student));
        e = await Assert.ThrowsAsync<ArgumentException>(() => registry.EnsureVariant(new VariantSpec(FleetTask.Vqa, "other", 0.35, new string('d', 64)), null));
        Assert.Contains("No compact model 'other'", e.Message);
        e = await Assert.ThrowsAsync<ArgumentException>(() => registry.EnsureVariant(new VariantSpec(FleetTask.Vqa, "m", 1.5, new string('d', 64)), null));
        Assert.Contains("strictly between 0 and 1", e.Message);
        e = await Assert.ThrowsAsync<ArgumentException>(() => registry.EnsureVariant(new VariantSpec(FleetTask.Vqa, "m", 0.35, new string('d', 64)),
            new JobSettings { BatchSize = 0 }));
        Assert.Contains("Batch size", e.Message);
        Assert.Empty(await registry.ListVariants());
    }

    [Fact]
    public async Task The_device_probe_runs_on_the_silo_executor()
    {
        var result = await fixture.Cluster.Client.GetGrain<IDeviceProbeGrain>(0).Probe();
        Assert.Equal(55f, result.MatmulTrace);
        Assert.Equal("cpu", result.Device);
    }
}

public sealed class JobFailureTests
{
    [Fact]
    public void Storage_cluster_and_torch_scalar_failures_are_retried_and_bad_input_is_not()
    {
        var scalar = new System.Runtime.InteropServices.ExternalException(
            "Unknown scalar type.\nException raised from type at /pytorch/c10/core/Scalar.h:339 (most recent call first):\nframe #0: ...");
        Assert.True(FleetJobGrain.IsTransient(scalar));
        Assert.True(FleetJobGrain.IsTransient(new Azure.RequestFailedException(503, "busy")));
        Assert.True(FleetJobGrain.IsTransient(new AggregateException(new TimeoutException())));
        Assert.False(FleetJobGrain.IsTransient(new Azure.RequestFailedException(404, "no such blob")));
        Assert.False(FleetJobGrain.IsTransient(new ArgumentException("The teacher must be fine-tuned for Vqa")));
        Assert.False(FleetJobGrain.IsTransient(new System.Runtime.InteropServices.ExternalException("shape mismatch")));
        Assert.Equal("Unknown scalar type.", FleetJobGrain.UserMessage(scalar));
    }
}
