using EfficientVlm.Client;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Harness.Processes;

namespace EfficientVlm.Harness;

/// <summary>Settings of a harness run (see <c>fleet-harness --help</c>).</summary>
public sealed record HarnessSettings
{
    public required string RepositoryRoot { get; init; }
    public required string SiloAssembly { get; init; }
    /// <summary>An Azurite data folder holding a ready variant (scripts/demo.sh makes one); copied, never changed.</summary>
    public required string StorageFrom { get; init; }
    public required string Images { get; init; }
    public required string Output { get; init; }
    public string Variant { get; init; } = "vqa-default";
    public string Question { get; init; } = "what color is the circle?";
    public int Callers { get; init; } = 96;
    /// <summary>Length of each phase, seconds.</summary>
    public double Phase { get; init; } = 30;
    /// <summary>How long storage stays down in the restart, seconds.</summary>
    public double Outage { get; init; } = 10;
    public int TorchThreads { get; init; } = 1;
    /// <summary>Pin the n-th silo started to core n mod the core count (one device per silo).</summary>
    public bool Pin { get; init; }
    /// <summary>Extra silo settings (Fleet__... environment variables).</summary>
    public IReadOnlyDictionary<string, string> SiloSettings { get; init; } = new Dictionary<string, string>();
}

/// <summary>
/// The elastic scale-out and fault scenario, on loopback: Azurite (a copy of a folder that holds a ready
/// variant) and GPU-tagged silo processes, with closed-loop callers through the SDK the whole time.
/// <list type="number">
/// <item>one GPU silo (the baseline);</item>
/// <item>a second GPU silo joins: when does a replica reach it, and what is the throughput with two;</item>
/// <item>the first silo is SIGKILLed: failed calls and the longest call across the kill;</item>
/// <item>Azurite is stopped and started again: calls during the outage, and when storage writes work again;</item>
/// <item>a third GPU silo joins after the restart (membership in storage works again) and gets a replica.</item>
/// </list>
/// </summary>
public sealed class ScaleOutScenario(HarnessSettings settings, Action<string> log)
{
    private readonly Timeline _timeline = new();
    private readonly Dictionary<string, SiloProcess> _silos = new();
    private readonly List<string> _dead = [];
    private int _started;
    private AzuriteProcess _azurite = null!;
    private string _clusterId = "";

    public Timeline Timeline => _timeline;

    /// <summary>When the load stopped (seconds since the start); the report covers the run up to here.</summary>
    public double End { get; private set; }

    /// <summary>Summary lines for the report: what each phase showed.</summary>
    public List<(string Measure, string Value)> Findings { get; } = [];

    public async Task RunAsync(CancellationToken ct)
    {
        var storage = Path.Combine(settings.Output, "azurite");
        if (Directory.Exists(storage)) Directory.Delete(storage, recursive: true);
        Copy(settings.StorageFrom, storage);
        _azurite = await AzuriteProcess.StartAsync(settings.RepositoryRoot, storage);
        _clusterId = "harness-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            await RunScenarioAsync(ct);
        }
        finally
        {
            foreach (var silo in _silos.Values) await silo.DisposeAsync();
            await _azurite.DisposeAsync();
        }
    }

    private async Task RunScenarioAsync(CancellationToken ct)
    {
        double p = settings.Phase;
        await StartSiloAsync("g1");
        await using var client = await FleetClient.ConnectAsync(new FleetConnectionOptions
        {
            ClusterId = _clusterId, StorageConnectionString = _azurite.ConnectionString,
        }, cancellationToken: ct);
        var info = await client.ResolveAsync(settings.Variant, ct);
        var images = Directory.GetFiles(settings.Images).Where(f => f.EndsWith(".png")).Order().Take(64).Select(File.ReadAllBytes).ToArray();
        if (images.Length == 0) throw new ArgumentException($"No PNG images in {settings.Images}.");
        await client.AnswerAsync(settings.Variant, images[0], settings.Question, ct); // the model loads on g1
        log($"variant {info.VariantId} ({info.Task}) answers on g1; load: {settings.Callers} callers");

        using var stop = new CancellationTokenSource();
        var load = Enumerable.Range(0, settings.Callers).Select(i => Task.Run(() => CallerAsync(client, images, i, stop.Token), ct)).ToList();
        var sampler = Task.Run(() => SampleAsync(client, info.VariantId, stop.Token), ct);
        var start = _timeline.Now;
        _timeline.Mark("load starts on g1");

        // 1. one GPU silo
        await UntilAsync(start + p, ct);
        _timeline.AddWindow("1 GPU silo", start + Math.Min(5, p / 4), _timeline.Now);

        // 2. a second one joins
        await JoinAsync(client, info.VariantId, "g2", "2 GPU silos", p, ct);
        var twoRate = _timeline.Stats(_timeline.Windows[^1]).PerSecond;

        // 3. SIGKILL the first
        var kill = _timeline.Mark("g1 SIGKILL");
        _silos["g1"].Kill();
        _dead.Add("g1");
        await UntilAsync(kill.At + p, ct);
        Findings.Add(("g1 SIGKILL: failed calls after it", $"{_timeline.Calls.Count(c => !c.Ok && c.Ended >= kill.At)}"));
        Findings.Add(("g1 SIGKILL: longest call in flight at the kill", $"{_timeline.LongestAcross(kill.At) / 1000:0.0} s"));
        Findings.Add(("g1 SIGKILL: longest call begun in the 5 s after it", $"{_timeline.LongestBegun(kill.At, kill.At + 5) / 1000:0.0} s"));
        var recovered = _timeline.Recovery(kill.At, twoRate / 2);
        Findings.Add(("g1 SIGKILL: until a second with half the 2-silo rate", recovered is null ? "not within the phase" : $"{recovered:0.0} s"));
        _timeline.AddWindow("after the kill (g2)", kill.At, _timeline.Now);

        // 4. storage restart
        if ((await WriteAsync(client, info.VariantId)).Error is { } before) throw new InvalidOperationException($"A storage write failed before the outage: {before}");
        var down = _timeline.Mark("Azurite stopped");
        await _azurite.StopAsync();
        var refused = new List<(double Seconds, string Error)>();
        while (_timeline.Now < down.At + settings.Outage)
        {
            var (took, error) = await WriteAsync(client, info.VariantId);
            if (error is not null) refused.Add((took, error));
            await Task.Delay(1000, ct);
        }
        var up = _timeline.Mark("Azurite started again");
        await _azurite.StartAgainAsync();
        Event? writes = null;
        while (writes is null && _timeline.Now < up.At + 4 * p)
        {
            if ((await WriteAsync(client, info.VariantId)).Error is null) writes = _timeline.Mark("a storage write succeeds again");
            else await Task.Delay(500, ct);
        }
        _timeline.AddWindow("storage outage", down.At, _timeline.Now);
        Findings.Add(("Azurite down: storage writes tried / refused", $"{refused.Count} / {refused.Count}" +
            (refused.Count == 0 ? "" : $", each after {refused.Min(r => r.Seconds):0.0}-{refused.Max(r => r.Seconds):0.0} s: {refused[0].Error}")));
        Findings.Add(("Azurite up: first storage write succeeds after", writes is null ? "none" : $"{writes.At - up.At:0.0} s"));

        // 5. a third GPU silo joins after the restart (through the membership table in the restarted storage)
        await JoinAsync(client, info.VariantId, "g3", "g2 + g3", p, ct);
        End = _timeline.Mark("load stops").At;

        await stop.CancelAsync();
        await Task.WhenAll(load);
        await sampler;
        foreach (var (name, silo) in _silos.Where(s => !_dead.Contains(s.Key)))
            Findings.Add(($"{name} alive at the end", silo.HasExited ? "NO (exited)" : "yes"));
    }

    /// <summary>Starts GPU silo <paramref name="name"/> under load, waits for a replica on it, then measures one phase as <paramref name="window"/>.</summary>
    private async Task JoinAsync(FleetClient client, string variant, string name, string window, double phase, CancellationToken ct)
    {
        var joining = _timeline.Mark($"{name} starting");
        await StartSiloAsync(name);
        var joined = _timeline.Mark($"{name} joined (ready)");
        var spread = await ReplicaOnAsync(client, variant, name, TimeSpan.FromSeconds(4 * phase), ct);
        Findings.Add(($"{name}: start to ready", $"{joined.At - joining.At:0.0} s"));
        Findings.Add(($"{name}: ready to first replica on it", spread is null ? "none within the phase" : $"{spread.At - joined.At:0.0} s"));
        double from = (spread?.At ?? joined.At) + 5; // the new replica warmed up
        await UntilAsync(from + phase, ct);
        _timeline.AddWindow(window, from, _timeline.Now);
    }

    private async Task CallerAsync(FleetClient client, byte[][] images, int index, CancellationToken stop)
    {
        int i = index;
        while (!stop.IsCancellationRequested)
        {
            var begun = _timeline.Now;
            try
            {
                await client.AnswerAsync(settings.Variant, images[i++ % images.Length], settings.Question, stop);
                _timeline.Record(new Call(begun, _timeline.Now, true));
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                _timeline.Record(new Call(begun, _timeline.Now, false));
                _timeline.RecordError(e);
            }
        }
    }

    /// <summary>Once a second: which silo each replica of the variant is on (by name).</summary>
    private async Task SampleAsync(FleetClient client, string variant, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                var placed = await ReplicaSilosAsync(client, variant);
                _timeline.Sample(string.Join(" ", placed.Select((s, i) => $"r{i}@{s}")), placed.Count);
            }
            catch (Exception) when (!stop.IsCancellationRequested)
            {
                // a replica on a silo that just died: the next sample sees where it came back
            }
            try
            {
                await Task.Delay(1000, stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task<List<string>> ReplicaSilosAsync(FleetClient client, string variant)
    {
        var info = await client.Grains.GetGrain<IFleetRegistryGrain>(IFleetRegistryGrain.DefaultKey).Resolve(variant);
        var silos = new List<string>();
        for (int i = 0; i < info.Replicas; i++)
        {
            var stats = await client.Grains.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(variant, i)).Stats()
                .WaitAsync(TimeSpan.FromSeconds(5));
            silos.Add(NameOf(stats.Silo));
        }
        return silos;
    }

    private async Task<Event?> ReplicaOnAsync(FleetClient client, string variant, string silo, TimeSpan timeout, CancellationToken ct)
    {
        var deadline = _timeline.Now + timeout.TotalSeconds;
        while (_timeline.Now < deadline)
        {
            try
            {
                if ((await ReplicaSilosAsync(client, variant)).Contains(silo)) return _timeline.Mark($"a replica runs on {silo}");
            }
            catch (Exception)
            {
                // keep looking
            }
            await Task.Delay(250, ct);
        }
        _timeline.Mark($"no replica on {silo} within {timeout.TotalSeconds:0} s");
        return null;
    }

    /// <summary>A write to grain storage (an alias of the variant, set again), waited for: how long it took, and its error if it failed.</summary>
    private async Task<(double Seconds, string? Error)> WriteAsync(FleetClient client, string variantId)
    {
        var begun = _timeline.Now;
        try
        {
            await client.SetAliasAsync("harness-probe", variantId);
            return (_timeline.Now - begun, null);
        }
        catch (Exception e)
        {
            var message = $"{e.GetType().Name}: {e.Message.Split('\n')[0]}";
            if (_writeErrors.Add(message)) log($"storage write refused after {_timeline.Now - begun:0.0} s: {message}");
            return (_timeline.Now - begun, message.Length > 160 ? message[..160] + "..." : message);
        }
    }

    private readonly HashSet<string> _writeErrors = [];

    private async Task StartSiloAsync(string name)
    {
        var environment = new Dictionary<string, string>
        {
            ["Fleet__Silo__Accelerator"] = "cuda", // GPU-tagged: serving replicas go only to these
            ["Fleet__Silo__Executor__TorchThreads"] = settings.TorchThreads.ToString(),
            ["Fleet__Jobs__WorkDirectory"] = Path.Combine(settings.Output, "work-" + name),
            ["Fleet__Gateway__Dashboard"] = "false",
            ["Logging__LogLevel__Default"] = "Warning",
            ["Logging__LogLevel__EfficientVlm"] = "Information",
        };
        foreach (var (key, value) in settings.SiloSettings) environment[key] = value;
        int? cpu = settings.Pin ? _started++ % Environment.ProcessorCount : null;
        var silo = await SiloProcess.StartAsync(settings.SiloAssembly, _clusterId, _azurite.ConnectionString, environment,
            readyTimeout: TimeSpan.FromSeconds(120), cpu: cpu);
        _silos[name] = silo;
        log($"{name} up: pid {silo.Pid}, silo port {silo.SiloPort}, http {silo.HttpPort}{(cpu is null ? "" : $", pinned to core {cpu}")}");
    }

    private string NameOf(string siloAddress) =>
        _silos.FirstOrDefault(s => siloAddress.Contains($":{s.Value.SiloPort}:")).Key ?? siloAddress; // S<ip>:<port>:<generation>

    private async Task UntilAsync(double at, CancellationToken ct)
    {
        var wait = at - _timeline.Now;
        if (wait > 0) await Task.Delay(TimeSpan.FromSeconds(wait), ct);
    }

    private static void Copy(string from, string to)
    {
        if (!Directory.Exists(from)) throw new ArgumentException($"No storage folder {from}: run scripts/demo.sh first (it makes the variant).");
        foreach (var dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
    }
}
