using EfficientVlm.Client;
using EfficientVlm.Fleet.Tests.Infrastructure;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Harness.Processes;
using Xunit.Abstractions;

namespace EfficientVlm.Fleet.Tests.Integration;

/// <summary>Real Azurite + a real silo process + the SDK.</summary>
[Collection(AzuriteCollection.Name)]
public sealed class SiloRestartTests(AzuriteFixture azurite, ITestOutputHelper output)
{
    [Fact]
    public async Task Registry_state_survives_a_killed_and_restarted_silo()
    {
        output.WriteLine($"storage: {azurite.Origin}");
        var clusterId = "test-" + Guid.NewGuid().ToString("N")[..12];
        var connection = new FleetConnectionOptions { ClusterId = clusterId, StorageConnectionString = azurite.ConnectionString };
        var registration = new CompactModelRegistration("compact-a", "tiny", new string('a', 64), new string('b', 64));

        CompactModelInfo written;
        int firstPid;
        await using (var silo = await SiloProcess.StartAsync(TestPaths.SiloAssembly, clusterId, azurite.ConnectionString))
        {
            firstPid = silo.Pid;
            await using var client = await FleetClient.ConnectAsync(connection);
            var probe = await client.ProbeDeviceAsync();
            Assert.Equal(55f, probe.MatmulTrace);
            written = await client.RegisterCompactModelAsync(registration);
            silo.Kill(); // SIGKILL: nothing flushed at shutdown, state must already be in blob storage
            Assert.True(silo.HasExited);
        }

        await using (var silo = await SiloProcess.StartAsync(TestPaths.SiloAssembly, clusterId, azurite.ConnectionString))
        {
            Assert.NotEqual(firstPid, silo.Pid);
            await using var client = await FleetClient.ConnectAsync(connection);
            var models = await client.ListCompactModelsAsync();
            var model = Assert.Single(models);
            Assert.Equal((written.Id, written.Status, written.Teacher, written.Student, written.RegisteredAt),
                (model.Id, model.Status, model.Teacher, model.Student, model.RegisteredAt));
            // Idempotent: registering the same id again returns the stored record, not a new one.
            Assert.Equal(written.RegisteredAt, (await client.RegisterCompactModelAsync(registration with { Preset = "other" })).RegisteredAt);
        }
    }
}
