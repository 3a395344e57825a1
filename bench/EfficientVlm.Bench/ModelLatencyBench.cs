using System.Diagnostics;
using EfficientVlm.Common;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Jobs;
using EfficientVlm.Model.Modules;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Bench;

/// <summary>
/// Forward latency of teacher against student, side by side in one process: image encoder + text
/// encoder + fusion + ITM head (the retrieval / matching path), eval mode, no_grad, random weights
/// (latency does not depend on their values).
/// </summary>
public static class ModelLatencyBench
{
    public static int Run(string[] args)
    {
        int threads = Args.Int(args, "--threads", 2);
        bool paper = !args.Contains("--no-paper");
        TorchSharp.torch.set_num_threads(threads);
        torch.manual_seed(0);

        var rows = new List<string[]>();
        int i = Array.IndexOf(args, "--checkpoints");
        if (i >= 0 && i + 1 < args.Length)
        {
            // trained checkpoints side by side, the first is the reference (e.g. teacher, student, pruned student)
            var models = args[i + 1].Split(',').Select(path => (Path: path, Model: EfficientVlm.Model.Checkpoints.Checkpoint.Load(path))).ToList();
            rows.AddRange(Compare(models.Select(m => (m.Path, m.Model)).ToList(), textLength: 16, iterations: [30, 10], warmup: 3));
            foreach (var m in models) m.Model.Dispose();
        }
        else
        {
            rows.AddRange(Pair(Presets.DemoTeacher, Presets.Demo, textLength: 16, iterations: [30, 10], warmup: 3));
            if (paper) rows.AddRange(Pair(Presets.PaperTeacher, Presets.PaperStudent, textLength: 30, iterations: [5, 2], warmup: 1));
        }

        var table = new Table().AddColumns("model", "params (all)", "batch", "iterations", "median ms", "min ms", "speed-up vs first");
        foreach (var r in rows) table.AddRow(r);
        AnsiConsole.MarkupLine("[bold]teacher vs student forward latency[/] (image + text + fusion + ITM, eval, no_grad)");
        AnsiConsole.MarkupLine(BenchMachine.Describe(threads));
        AnsiConsole.Write(table);
        return 0;
    }

    private static IEnumerable<string[]> Pair(VlmConfig teacherConfig, VlmConfig studentConfig, int textLength, int[] iterations, int warmup)
    {
        using var teacher = new VlmModel(teacherConfig);
        using var student = new VlmModel(studentConfig);
        return Compare([(teacherConfig.Name, teacher), (studentConfig.Name, student)], textLength, iterations, warmup).ToList();
    }

    /// <summary>Times every model at batch 1 and 32, interleaved so machine noise hits all alike; speed-up is against the first.</summary>
    private static IEnumerable<string[]> Compare(IReadOnlyList<(string Name, VlmModel Model)> models, int textLength, int[] iterations, int warmup)
    {
        foreach (var (_, m) in models) m.eval();
        int[] batches = [1, 32];
        for (int b = 0; b < batches.Length; b++)
        {
            int batch = batches[b];
            var times = models.Select(_ => new List<double>()).ToArray();
            for (int i = -warmup; i < iterations[b]; i++)
            {
                for (int m = 0; m < models.Count; m++)
                {
                    var ms = Latency.Forward(models[m].Model, batch, textLength);
                    if (i >= 0) times[m].Add(ms);
                }
            }
            double reference = Quantiles.Median(times[0]);
            for (int m = 0; m < models.Count; m++)
            {
                double median = Quantiles.Median(times[m]);
                yield return [models[m].Name, $"{ParameterCounts.Count(models[m].Model):N0}", $"{batch}", $"{iterations[b]}", $"{median:0.0}",
                    $"{times[m].Min():0.0}", m == 0 ? "" : $"{reference / median:0.00}x"];
            }
        }
    }
}

internal static class Args
{
    public static int Int(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length && int.TryParse(args[i + 1], out var v) ? v : fallback;
    }

    public static string? String(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
