using EfficientVlm.Harness.Processes;

namespace EfficientVlm.Fleet.Tests.Infrastructure;

/// <summary>
/// Real Azure Storage for tests. Uses, in order: the connection string in FLEET_TEST_STORAGE; an
/// Azurite already answering on the standard ports (scripts/azurite.sh start); else starts Azurite
/// from node_modules on free ports with a temporary data folder, and stops only that one.
/// </summary>
public sealed class AzuriteFixture : IAsyncLifetime
{
    private AzuriteProcess? _process;

    public string ConnectionString { get; private set; } = "";

    /// <summary>Where the storage came from, for test output.</summary>
    public string Origin { get; private set; } = "";

    public async Task InitializeAsync()
    {
        var fromEnvironment = Environment.GetEnvironmentVariable("FLEET_TEST_STORAGE");
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            ConnectionString = fromEnvironment;
            Origin = "FLEET_TEST_STORAGE";
            return;
        }
        if (Ports.Answers(10000) && Ports.Answers(10002))
        {
            ConnectionString = AzuriteProcess.Connection(10000, 10001, 10002);
            Origin = "Azurite already running on 10000-10002";
            return;
        }
        _process = await AzuriteProcess.StartAsync(TestPaths.RepositoryRoot, Directory.CreateTempSubdirectory("fleet-azurite-").FullName);
        ConnectionString = _process.ConnectionString;
        Origin = $"Azurite started by the tests on {_process.BlobPort}/{_process.QueuePort}/{_process.TablePort}";
    }

    public async Task DisposeAsync()
    {
        if (_process is null) return;
        await _process.DisposeAsync();
        try
        {
            Directory.Delete(_process.DataFolder, recursive: true);
        }
        catch (IOException)
        {
            // a file still held by the dying process: the temp folder is cleaned by the OS later.
        }
    }
}

[CollectionDefinition(Name)]
public sealed class AzuriteCollection : ICollectionFixture<AzuriteFixture>
{
    public const string Name = "azurite";
}
