using System.Diagnostics;
using System.Runtime.InteropServices;

namespace EfficientVlm.Harness.Processes;

/// <summary>
/// An Azurite process (from the repository's node_modules) on loopback ports with its own data folder.
/// It can be stopped and started again on the same ports and folder, as a storage restart.
/// </summary>
public sealed class AzuriteProcess : IAsyncDisposable
{
    // Azurite's well-known development account (public, documented by Azurite; not a secret).
    public const string DevAccount = "devstoreaccount1";
    public const string DevKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    private readonly string _executable;
    private Process? _process;

    private AzuriteProcess(string executable, string dataFolder, int blob, int queue, int table)
    {
        _executable = executable;
        DataFolder = dataFolder;
        BlobPort = blob;
        QueuePort = queue;
        TablePort = table;
    }

    public string DataFolder { get; }
    public int BlobPort { get; }
    public int QueuePort { get; }
    public int TablePort { get; }
    public bool Running => _process is { HasExited: false };

    public string ConnectionString => Connection(BlobPort, QueuePort, TablePort);

    /// <summary>The connection string of the development account on these loopback ports.</summary>
    public static string Connection(int blob, int queue, int table) =>
        $"DefaultEndpointsProtocol=http;AccountName={DevAccount};AccountKey={DevKey};" +
        $"BlobEndpoint=http://127.0.0.1:{blob}/{DevAccount};QueueEndpoint=http://127.0.0.1:{queue}/{DevAccount};" +
        $"TableEndpoint=http://127.0.0.1:{table}/{DevAccount};";

    /// <summary>Starts Azurite (<c>node_modules/.bin/azurite</c> under <paramref name="repositoryRoot"/>) on free ports and waits until it answers.</summary>
    public static async Task<AzuriteProcess> StartAsync(string repositoryRoot, string dataFolder)
    {
        var executable = Path.Combine(repositoryRoot, "node_modules", ".bin", "azurite");
        if (!File.Exists(executable))
            throw new InvalidOperationException($"Azurite is not installed ({executable} is missing). Run `npm ci` in the repository root.");
        Directory.CreateDirectory(dataFolder);
        var azurite = new AzuriteProcess(executable, dataFolder, Ports.Free(), Ports.Free(), Ports.Free());
        await azurite.StartAgainAsync();
        return azurite;
    }

    /// <summary>Starts the process (again) on the same ports and data folder.</summary>
    public async Task StartAgainAsync()
    {
        if (Running) throw new InvalidOperationException("Azurite is already running.");
        var start = new ProcessStartInfo(_executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[]
                 {
                     "--silent", "--location", DataFolder, "--skipApiVersionCheck", "--loose",
                     "--blobHost", "127.0.0.1", "--blobPort", BlobPort.ToString(),
                     "--queueHost", "127.0.0.1", "--queuePort", QueuePort.ToString(),
                     "--tableHost", "127.0.0.1", "--tablePort", TablePort.ToString(),
                 })
            start.ArgumentList.Add(arg);
        _process?.Dispose();
        _process = Process.Start(start) ?? throw new InvalidOperationException("Could not start Azurite.");
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!(Ports.Answers(BlobPort) && Ports.Answers(QueuePort) && Ports.Answers(TablePort)))
        {
            if (_process.HasExited) throw new InvalidOperationException($"Azurite exited with code {_process.ExitCode}.");
            if (DateTime.UtcNow > deadline) throw new TimeoutException("Azurite did not answer within 30 s.");
            await Task.Delay(100);
        }
    }

    /// <summary>
    /// Stops the process: SIGTERM, on which Azurite saves its metadata and closes its ports (the node process
    /// itself stays up), then SIGKILL once the ports are closed, or after 10 s.
    /// </summary>
    public async Task StopAsync()
    {
        if (_process is not { HasExited: false } process) return;
        // node_modules/.bin/azurite is node itself (a script with a node shebang), so the signal reaches Azurite.
        if (Kill(process.Id, SigTerm) == 0)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (!process.HasExited && DateTime.UtcNow < deadline && (Ports.Answers(BlobPort) || Ports.Answers(QueuePort) || Ports.Answers(TablePort)))
                await Task.Delay(100);
        }
        if (!process.HasExited) process.Kill(entireProcessTree: true);
        await process.WaitForExitAsync();
    }

    private const int SigTerm = 15;

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    public async ValueTask DisposeAsync()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process?.Dispose();
    }
}
