using System.Diagnostics;
using EfficientVlm.Common;
using EfficientVlm.Model.Runtime;
using Spectre.Console;
using TorchSharp;

namespace EfficientVlm.Bench;

/// <summary>
/// What the device executor costs per work item: the same small tensor computation called
/// directly on one thread, then through the executor one at a time, then from 8 concurrent callers.
/// </summary>
public static class ExecutorBench
{
    public static async Task<int> RunAsync(string[] args)
    {
        int items = Args.Int(args, "--items", 2000);
        int threads = Args.Int(args, "--threads", 1);
        TorchRuntime.EnsureLoaded();
        torch.set_num_threads(threads);

        static float Work(torch.Device device)
        {
            var x = torch.randn(16, 64, device: device);
            var w = torch.randn(64, 64, device: device);
            return torch.nn.functional.gelu(x.mm(w)).sum().item<float>();
        }

        var rows = new List<(string Mode, double PerItemUs, double P50, double P99)>();

        var direct = new List<double>(items);
        for (int i = 0; i < items; i++)
        {
            var sw = Stopwatch.StartNew();
            using (torch.NewDisposeScope())
            using (torch.no_grad())
                Work(torch.CPU);
            direct.Add(sw.Elapsed.TotalMicroseconds);
        }
        rows.Add(Summarise("direct call, 1 caller", direct, direct.Sum()));

        using var executor = new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu", WorkerThreads = 1 });
        var sequential = new List<double>(items);
        var total = Stopwatch.StartNew();
        for (int i = 0; i < items; i++)
        {
            var sw = Stopwatch.StartNew();
            await executor.RunAsync(ctx => Work(ctx.Device));
            sequential.Add(sw.Elapsed.TotalMicroseconds);
        }
        rows.Add(Summarise("executor, 1 caller", sequential, total.Elapsed.TotalMicroseconds));

        var concurrent = new System.Collections.Concurrent.ConcurrentBag<double>();
        total.Restart();
        await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            for (int i = 0; i < items / 8; i++)
            {
                var sw = Stopwatch.StartNew();
                await executor.RunAsync(ctx => Work(ctx.Device));
                concurrent.Add(sw.Elapsed.TotalMicroseconds);
            }
        })));
        rows.Add(Summarise("executor, 8 callers", concurrent.ToList(), total.Elapsed.TotalMicroseconds));

        var table = new Table().AddColumns("mode", "wall µs / item", "p50 µs", "p99 µs");
        foreach (var r in rows)
            table.AddRow(r.Mode, r.PerItemUs.ToString("0.0"), r.P50.ToString("0.0"), r.P99.ToString("0.0"));
        AnsiConsole.MarkupLine($"[bold]executor overhead[/]: {items} items of gelu(randn(16,64) @ randn(64,64)).sum()");
        AnsiConsole.MarkupLine(BenchMachine.Describe(threads));
        AnsiConsole.Write(table);
        return 0;

        (string, double, double, double) Summarise(string mode, List<double> latencies, double wallMicros)
        {
            latencies.Sort();
            return (mode, wallMicros / latencies.Count, Quantiles.NearestRank(latencies, 0.5), Quantiles.NearestRank(latencies, 0.99));
        }
    }
}
