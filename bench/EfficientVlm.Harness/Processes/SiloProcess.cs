using System.Collections.Concurrent;
using System.Diagnostics;

namespace EfficientVlm.Harness.Processes;

/// <summary>A real silo process (silo/EfficientVlm.Silo) on loopback ports, for integration tests and the fleet harness.</summary>
public sealed class SiloProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _log = new();

    private SiloProcess(Process process, int httpPort, int siloPort, int gatewayPort)
    {
        _process = process;
        HttpPort = httpPort;
        SiloPort = siloPort;
        GatewayPort = gatewayPort;
        process.OutputDataReceived += (_, e) => { if (e.Data != null) _log.Enqueue(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data != null) _log.Enqueue(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public int HttpPort { get; }
    public int SiloPort { get; }
    public int GatewayPort { get; }
    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;

    /// <summary>The process's output so far (for failure messages).</summary>
    public string Log => string.Join('\n', _log.TakeLast(200));

    /// <summary>Starts a silo and waits until <c>/ready</c> answers 200 (joined, executor works).</summary>
    /// <param name="siloAssembly">The built silo (EfficientVlm.Silo.dll).</param>
    /// <param name="cpu">When set, the process runs pinned to this core (taskset).</param>
    public static async Task<SiloProcess> StartAsync(string siloAssembly, string clusterId, string storage,
        IReadOnlyDictionary<string, string>? extra = null, int? siloPort = null, int? gatewayPort = null,
        TimeSpan? readyTimeout = null, int? cpu = null)
    {
        if (!File.Exists(siloAssembly))
            throw new InvalidOperationException($"Silo not built: {siloAssembly}");
        int http = Ports.Free();
        int silo = siloPort ?? Ports.Free();
        int gateway = gatewayPort ?? Ports.Free();
        // cpu: pinned to that core with taskset (all its threads), as one device per silo
        var start = new ProcessStartInfo(cpu is null ? "dotnet" : "taskset")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(siloAssembly)!,
        };
        if (cpu is { } core)
            foreach (var arg in new[] { "-c", core.ToString(), "dotnet" }) start.ArgumentList.Add(arg);
        start.ArgumentList.Add(siloAssembly);
        start.Environment["Urls"] = $"http://127.0.0.1:{http}";
        start.Environment["Fleet__ClusterId"] = clusterId;
        start.Environment["Fleet__StorageConnectionString"] = storage;
        start.Environment["Fleet__Silo__SiloPort"] = silo.ToString();
        start.Environment["Fleet__Silo__GatewayPort"] = gateway.ToString();
        start.Environment["Fleet__Silo__FastFailureDetection"] = "true";
        start.Environment["Fleet__Silo__Executor__Device"] = "cpu";
        start.Environment["Fleet__Silo__Executor__TorchThreads"] = "1";
        start.Environment["DOTNET_gcServer"] = "0"; // several silo processes share a few cores
        foreach (var (key, value) in extra ?? new Dictionary<string, string>())
            start.Environment[key] = value;

        var process = Process.Start(start) ?? throw new InvalidOperationException("Could not start the silo process.");
        var silo_ = new SiloProcess(process, http, silo, gateway);
        try
        {
            await silo_.WaitReadyAsync(readyTimeout ?? TimeSpan.FromSeconds(90));
        }
        catch
        {
            await silo_.DisposeAsync();
            throw;
        }
        return silo_;
    }

    private async Task WaitReadyAsync(TimeSpan timeout)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(15) };
        var deadline = DateTime.UtcNow + timeout;
        string last = "";
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"Silo exited with code {_process.ExitCode}:\n{Log}");
            try
            {
                var response = await http.GetAsync($"http://127.0.0.1:{HttpPort}/ready");
                if (response.IsSuccessStatusCode) return;
                last = $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}";
            }
            catch (HttpRequestException e)
            {
                last = e.Message;
            }
            catch (TaskCanceledException e)
            {
                last = e.Message;
            }
            await Task.Delay(250);
        }
        throw new TimeoutException($"Silo not ready within {timeout.TotalSeconds:0} s (last: {last}):\n{Log}");
    }

    /// <summary>SIGKILL: no shutdown, no goodbye to the cluster (a crash).</summary>
    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(10_000);
        }
    }

    public ValueTask DisposeAsync()
    {
        Kill();
        _process.Dispose();
        return ValueTask.CompletedTask;
    }
}
