using System.CommandLine;
using System.Diagnostics;
using EfficientVlm.Common;
using EfficientVlm.Client;
using EfficientVlm.Grains.Abstractions;
using Spectre.Console;

namespace EfficientVlm.Cli;

/// <summary><c>fleet load</c>: closed-loop load on a variant through the SDK; throughput and latency per number of concurrent callers.</summary>
internal static class LoadCommand
{
    public sealed record Row(int Callers, long Requests, long Errors, double Seconds, double PerSecond, double P50, double P99);

    public static Command Create()
    {
        var variant = new Option<string>("--variant") { Description = "variant id or alias", Required = true };
        var images = new Option<DirectoryInfo>("--images") { Description = "folder of PNG/JPEG images to send", Required = true };
        var text = new Option<string>("--text") { Description = "question or statement", DefaultValueFactory = _ => "what color is the circle?" };
        var callers = new Option<string>("--callers") { Description = "concurrent callers, comma-separated", DefaultValueFactory = _ => "1,8,32,128" };
        var seconds = new Option<double>("--seconds") { Description = "measured time per step", DefaultValueFactory = _ => 10 };
        var warmup = new Option<double>("--warmup") { Description = "unmeasured time before each step", DefaultValueFactory = _ => 2 };
        var csv = new Option<FileInfo?>("--csv") { Description = "also write the table here" };
        var command = new Command("load", "Load generator: closed-loop callers through the SDK; throughput and p50/p99 latency.")
        {
            variant, images, text, callers, seconds, warmup, csv,
        };
        command.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var files = Directory.GetFiles(parse.GetValue(images)!.FullName).Where(f => f.EndsWith(".png") || f.EndsWith(".jpg")).Order().Take(64)
                .Select(File.ReadAllBytes).ToArray();
            if (files.Length == 0) throw new ArgumentException("No PNG or JPEG images in --images.");
            var name = parse.GetValue(variant)!;
            var info = await client.ResolveAsync(name, ct);
            var steps = parse.GetValue(callers)!.Split(',').Select(int.Parse).ToArray();
            var table = new Table().AddColumns("callers", "requests", "errors", "req/s", "p50 ms", "p99 ms");
            var rows = new List<Row>();
            foreach (var n in steps)
            {
                var row = await RunAsync(client, info, name, files, parse.GetValue(text)!, n, TimeSpan.FromSeconds(parse.GetValue(warmup)),
                    TimeSpan.FromSeconds(parse.GetValue(seconds)), ct);
                rows.Add(row);
                table.AddRow($"{row.Callers}", $"{row.Requests}", $"{row.Errors}", $"{row.PerSecond:0.0}", $"{row.P50:0.0}", $"{row.P99:0.0}");
                AnsiConsole.MarkupLineInterpolated($"{n} callers: {row.PerSecond:0.0} req/s, p50 {row.P50:0.0} ms, p99 {row.P99:0.0} ms, {row.Errors} errors");
            }
            AnsiConsole.Write(table);
            if (parse.GetValue(csv) is { } file)
                File.WriteAllLines(file.FullName, ["callers,requests,errors,seconds,per_second,p50_ms,p99_ms",
                    .. rows.Select(r => $"{r.Callers},{r.Requests},{r.Errors},{r.Seconds:0.000},{r.PerSecond:0.00},{r.P50:0.00},{r.P99:0.00}")]);
        }));
        return command;
    }

    private static async Task<Row> RunAsync(FleetClient client, ServingInfo info, string name, byte[][] images, string text, int callers,
        TimeSpan warmup, TimeSpan measured, CancellationToken ct)
    {
        var latencies = new List<double>[callers];
        long errors = 0;
        var clock = Stopwatch.StartNew();
        var start = warmup;
        var end = warmup + measured;
        async Task Caller(int index)
        {
            var mine = latencies[index] = [];
            int i = index;
            while (clock.Elapsed < end && !ct.IsCancellationRequested)
            {
                var image = images[i++ % images.Length];
                var begun = clock.Elapsed;
                try
                {
                    _ = info.Task switch
                    {
                        FleetTask.Vqa => (object)await client.AnswerAsync(name, image, text, ct),
                        FleetTask.Nlvr2 => await client.VerifyAsync(name, image, images[i % images.Length], text, ct),
                        FleetTask.Captioning => await client.CaptionAsync(name, image, ct),
                        _ => throw new ArgumentException($"Load for {info.Task} is not built yet."),
                    };
                    if (begun >= start) mine.Add((clock.Elapsed - begun).TotalMilliseconds);
                }
                catch (Exception) when (!ct.IsCancellationRequested)
                {
                    if (begun >= start) Interlocked.Increment(ref errors);
                }
            }
        }
        await Task.WhenAll(Enumerable.Range(0, callers).Select(i => Task.Run(() => Caller(i), ct)));
        var all = latencies.SelectMany(l => l).Order().ToList();
        return new Row(callers, all.Count, errors, measured.TotalSeconds, all.Count / measured.TotalSeconds,
            Quantiles.NearestRank(all, 0.5), Quantiles.NearestRank(all, 0.99));
    }
}
