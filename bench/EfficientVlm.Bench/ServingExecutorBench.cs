using System.Diagnostics;
using EfficientVlm.Common;
using EfficientVlm.Model.Images;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Serving;
using Spectre.Console;

namespace EfficientVlm.Bench;

/// <summary>
/// The serving ceiling: a variant's serving bundle answering VQA batches straight on a device executor
/// (no Orleans, no queue), per batch size. Images are decoded once beforehand.
/// </summary>
public static class ServingExecutorBench
{
    public static async Task<int> RunAsync(string[] args)
    {
        var bundle = Args.String(args, "--bundle") ?? throw new ArgumentException("--bundle <serving bundle folder> is required.");
        var imageDir = Args.String(args, "--images") ?? throw new ArgumentException("--images <folder of PNG images> is required.");
        int threads = Args.Int(args, "--threads", 0);
        var cpus = Args.String(args, "--cpus")?.Split(',').Select(int.Parse).ToArray();
        double seconds = Args.Int(args, "--seconds", 5);
        var batches = (Args.String(args, "--batches") ?? "1,2,4,8,16,32,64").Split(',').Select(int.Parse).ToArray();

        using var executor = new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu", TorchThreads = threads, Cpus = cpus });
        var model = await executor.RunAsync(ctx => ServingModel.Load(bundle, ctx.Device));
        var loader = new ImageLoader();
        var images = Directory.GetFiles(imageDir, "*.png").Order().Take(64).Select(p => loader.Load(File.ReadAllBytes(p), model.Config.ImageSize)).ToList();
        var table = new Table().AddColumns("batch", "calls", "answers/s", "ms per call (median)");
        (int Batch, double Rate) best = (0, 0);
        foreach (int b in batches)
        {
            var batch = Enumerable.Range(0, b).Select(i => images[i % images.Count]).ToList();
            var questions = Enumerable.Range(0, b).Select(i => i % 2 == 0 ? "what color is the circle?" : "how many shapes are there?").ToList();
            await executor.RunAsync(ctx => model.Vqa(batch, questions, ctx.Device)); // warm-up
            var times = new List<double>();
            var total = Stopwatch.StartNew();
            while (total.Elapsed.TotalSeconds < seconds)
            {
                var sw = Stopwatch.StartNew();
                await executor.RunAsync(ctx => model.Vqa(batch, questions, ctx.Device));
                times.Add(sw.Elapsed.TotalMilliseconds);
            }
            times.Sort();
            double rate = times.Count * b / total.Elapsed.TotalSeconds;
            if (rate > best.Rate) best = (b, rate);
            table.AddRow($"{b}", $"{times.Count}", $"{rate:0.0}", $"{Quantiles.NearestRank(times, 0.5):0.0}");
        }
        await executor.RunAsync(_ => model.Dispose());
        var pinned = cpus is null ? "" : $", executor pinned to CPU {string.Join(",", cpus)}";
        AnsiConsole.MarkupLineInterpolated($"serving ceiling, VQA bundle {Path.GetFileName(bundle)[..Math.Min(12, Path.GetFileName(bundle).Length)]}: {BenchMachine.Describe(threads)}{pinned}");
        AnsiConsole.Write(table);
        Console.WriteLine($"best batch: {best.Batch} ({best.Rate:0.0} answers/s)");
        return 0;
    }
}
