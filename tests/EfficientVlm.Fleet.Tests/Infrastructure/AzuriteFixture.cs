using System.Diagnostics;

namespace EfficientVlm.Fleet.Tests.Infrastructure;

/// <summary>
/// Real Azure Storage for tests. Uses, in order: the connection string in FLEET_TEST_STORAGE; an
/// Azurite already answering on the standard ports (scripts/azurite.sh start); else starts Azurite
/// from node_modules on free ports with a temporary data folder, and stops only that one.
/// </summary>
public sealed class AzuriteFixture : IAsyncLifetime
{
    // Azurite's well-known development account (public, documented by Azurite; not a secret).
    private const string DevAccount = "devstoreaccount1";
    private const string DevKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    private Process? _process;
    private string? _dataFolder;

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
            ConnectionString = Build(10000, 10001, 10002);
            Origin = "Azurite already running on 10000-10002";
            return;
        }

        var azurite = Path.Combine(TestPaths.RepositoryRoot, "node_modules", ".bin", "azurite");
        if (!File.Exists(azurite))
            throw new InvalidOperationException($"Azurite is not installed ({azurite} is missing). Run `npm ci` in the repository root.");
        int blob = Ports.Free(), queue = Ports.Free(), table = Ports.Free();
        _dataFolder = Directory.CreateTempSubdirectory("fleet-azurite-").FullName;
        var start = new ProcessStartInfo(azurite)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[]
                 {
                     "--silent", "--location", _dataFolder, "--skipApiVersionCheck", "--loose",
                     "--blobHost", "127.0.0.1", "--blobPort", blob.ToString(),
                     "--queueHost", "127.0.0.1", "--queuePort", queue.ToString(),
                     "--tableHost", "127.0.0.1", "--tablePort", table.ToString(),
                 })
            start.ArgumentList.Add(arg);
        _process = Process.Start(start) ?? throw new InvalidOperationException("Could not start Azurite.");
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!(Ports.Answers(blob) && Ports.Answers(queue) && Ports.Answers(table)))
        {
            if (_process.HasExited) throw new InvalidOperationException($"Azurite exited with code {_process.ExitCode}.");
            if (DateTime.UtcNow > deadline) throw new TimeoutException("Azurite did not answer within 30 s.");
            await Task.Delay(100);
        }
        ConnectionString = Build(blob, queue, table);
        Origin = $"Azurite started by the tests on {blob}/{queue}/{table}";
    }

    private static string Build(int blob, int queue, int table) =>
        $"DefaultEndpointsProtocol=http;AccountName={DevAccount};AccountKey={DevKey};" +
        $"BlobEndpoint=http://127.0.0.1:{blob}/{DevAccount};QueueEndpoint=http://127.0.0.1:{queue}/{DevAccount};" +
        $"TableEndpoint=http://127.0.0.1:{table}/{DevAccount};";

    public Task DisposeAsync()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(5000);
        }
        _process?.Dispose();
        if (_dataFolder != null)
        {
            try
            {
                Directory.Delete(_dataFolder, recursive: true);
            }
            catch (IOException)
            {
                // a file still held by the dying process: the temp folder is cleaned by the OS later.
            }
        }
        return Task.CompletedTask;
    }
}

[CollectionDefinition(Name)]
public sealed class AzuriteCollection : ICollectionFixture<AzuriteFixture>
{
    public const string Name = "azurite";
}
