using System.CommandLine;
using EfficientVlm.Harness;
using Spectre.Console;

if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
var root = RepositoryRoot();
var state = Path.Combine(root, ".fleet");

var storage = new Option<DirectoryInfo>("--storage-from")
{
    Description = "Azurite data folder holding a ready variant (copied, never changed)",
    DefaultValueFactory = _ => new DirectoryInfo(Path.Combine(state, "azurite")),
};
var images = new Option<DirectoryInfo>("--images")
{
    Description = "PNG images to send", DefaultValueFactory = _ => new DirectoryInfo(Path.Combine(state, "data", "images", "test")),
};
var output = new Option<DirectoryInfo>("--out")
{
    Description = "where the report, CSV, SVG, logs and the storage copy go", DefaultValueFactory = _ => new DirectoryInfo(Path.Combine(state, "harness")),
};
var variant = new Option<string>("--variant") { Description = "variant id or alias to call (VQA)", DefaultValueFactory = _ => "vqa-default" };
var callers = new Option<int>("--callers") { Description = "concurrent closed-loop callers", DefaultValueFactory = _ => 96 };
var phase = new Option<double>("--phase") { Description = "seconds per phase", DefaultValueFactory = _ => 30 };
var outage = new Option<double>("--outage") { Description = "seconds Azurite stays down", DefaultValueFactory = _ => 10 };
var threads = new Option<int>("--torch-threads") { Description = "torch threads per silo", DefaultValueFactory = _ => 1 };
var pin = new Option<bool>("--pin") { Description = "pin each silo to one core (taskset; silo n on core n mod cores)" };
var set = new Option<string[]>("--silo-setting")
{
    Description = "extra silo setting KEY=VALUE (environment, e.g. Fleet__Serving__ScaleInterval=00:00:05); repeatable",
    DefaultValueFactory = _ => [],
};
var command = new RootCommand(
    "Fleet harness: Azurite and GPU-tagged silo processes on 127.0.0.1, closed-loop load through the SDK while a silo joins, " +
    "one is SIGKILLed, Azurite restarts and another joins; writes report.md, timeline.csv and timeline.svg.")
{
    storage, images, output, variant, callers, phase, outage, threads, pin, set,
};
command.SetAction(async (parse, ct) =>
{
    var settings = new HarnessSettings
    {
        RepositoryRoot = root,
        SiloAssembly = Path.Combine(root, "silo", "EfficientVlm.Silo", "bin", "Release", "net10.0", "EfficientVlm.Silo.dll"),
        StorageFrom = parse.GetValue(storage)!.FullName,
        Images = parse.GetValue(images)!.FullName,
        Output = parse.GetValue(output)!.FullName,
        Variant = parse.GetValue(variant)!,
        Callers = parse.GetValue(callers),
        Phase = parse.GetValue(phase),
        Outage = parse.GetValue(outage),
        TorchThreads = parse.GetValue(threads),
        Pin = parse.GetValue(pin),
        SiloSettings = parse.GetValue(set)!.Select(s => s.Split('=', 2)).ToDictionary(
            kv => kv[0], kv => kv.Length == 2 ? kv[1] : throw new ArgumentException($"--silo-setting {kv[0]}: expected KEY=VALUE")),
    };
    Directory.CreateDirectory(settings.Output);
    var scenario = new ScaleOutScenario(settings, line => AnsiConsole.MarkupLineInterpolated($"[grey]{DateTime.Now:HH:mm:ss}[/] {line}"));
    var progress = Task.Run(async () =>
    {
        // one line every 5 s while the run goes on: what the callers see now
        int lastCount = 0;
        while (!ct.IsCancellationRequested)
        {
            await Task.Delay(5000, ct).ContinueWith(_ => { });
            var calls = scenario.Timeline.Calls;
            if (calls.Count == lastCount && calls.Count > 0) continue;
            var recent = calls.Where(c => c.Ended >= scenario.Timeline.Now - 5).ToList();
            AnsiConsole.MarkupLineInterpolated(
                $"[grey]{DateTime.Now:HH:mm:ss}[/]   t={scenario.Timeline.Now:0}s  {recent.Count(c => c.Ok) / 5.0:0.0} calls/s, {recent.Count(c => !c.Ok)} failed in the last 5 s");
            lastCount = calls.Count;
        }
    }, ct);
    await scenario.RunAsync(ct);

    var seconds = scenario.Timeline.Seconds(scenario.End);
    var windows = Report.Windows(scenario.Timeline);
    var one = windows.First(w => w.Window.Name == "1 GPU silo");
    var two = windows.First(w => w.Window.Name == "2 GPU silos");
    scenario.Findings.Insert(0, ("2 GPU silos over 1 (calls/s)", $"{two.PerSecond / one.PerSecond:0.00}x ({two.PerSecond:0.0} / {one.PerSecond:0.0})"));
    scenario.Findings.Insert(1, ("failed calls, whole run", $"{scenario.Timeline.Calls.Count(c => !c.Ok)} of {scenario.Timeline.Calls.Count}"));
    var header = $"Harness run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; {Environment.ProcessorCount} cores ({Cpu()}); {settings.Callers} callers; " +
                 $"{settings.TorchThreads} torch thread(s) per silo{(settings.Pin ? ", each silo pinned to one core" : "")}; phase {settings.Phase:0} s, outage {settings.Outage:0} s; variant {settings.Variant}" +
                 (settings.SiloSettings.Count == 0 ? "" : $"; {string.Join(", ", settings.SiloSettings.Select(kv => $"{kv.Key}={kv.Value}"))}");
    var markdown = Report.Markdown(header, scenario.Timeline, scenario.Findings, seconds);
    File.WriteAllText(Path.Combine(settings.Output, "report.md"), markdown);
    Report.WriteCsv(Path.Combine(settings.Output, "timeline.csv"), seconds);
    File.WriteAllText(Path.Combine(settings.Output, "timeline.svg"), Report.Svg($"Fleet harness: {settings.Callers} callers, " +
        $"GPU silos join, die, storage restarts ({DateTime.UtcNow:yyyy-MM-dd})", scenario.Timeline, seconds));
    Console.WriteLine();
    Console.WriteLine(markdown);
    Console.WriteLine($"written: {settings.Output}/report.md, timeline.csv, timeline.svg");
    return 0;
});
return await command.Parse(args).InvokeAsync();

static string RepositoryRoot()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "EfficientVlm.Fleet.sln"))) return dir.FullName;
    throw new InvalidOperationException("Run the harness from the repository's build output (no EfficientVlm.Fleet.sln above it).");
}

static string Cpu() =>
    File.Exists("/proc/cpuinfo")
        ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "?"
        : "?";
