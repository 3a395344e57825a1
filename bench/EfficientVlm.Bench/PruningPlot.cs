using System.Globalization;
using System.Text.Json;
using ScottPlot;
using Spectre.Console;

namespace EfficientVlm.Bench;

/// <summary>
/// The modal-adaptive vs uniform ablation as a picture: for every run folder under <c>--runs</c> with a
/// <c>prune-result.json</c> (written by <c>vlm prune</c>) and a <c>test.jsonl</c> (its shrunk model scored by
/// <c>vlm eval --results</c>), test score against target sparsity, one line per sparsity mode, one plot per task, the
/// teacher's score (from <c>--teacher-scores</c>, a package set's scores.json) drawn across. Writes
/// <c>&lt;out&gt;-&lt;task&gt;.svg</c> (and a PNG beside it with <c>--png</c>) and prints the points as a table.
/// </summary>
public static class PruningPlot
{
    private sealed record Point(string Task, string Mode, double Target, double Score, string Metric, long Parameters, string Run);

    public static int Run(string[] args)
    {
        var runs = Args.String(args, "--runs");
        var output = Args.String(args, "--out");
        if (runs is null || output is null)
        {
            Console.Error.WriteLine("pruning-plot needs --runs DIR (run folders of vlm prune, each with test.jsonl) and --out PREFIX");
            return 2;
        }
        var teacher = Args.String(args, "--teacher-scores") is { } path ? TeacherScores(path) : new Dictionary<string, double>();
        var points = Directory.GetDirectories(runs).Select(Read).OfType<Point>().OrderBy(p => p.Task).ThenBy(p => p.Mode).ThenBy(p => p.Target).ToList();
        if (points.Count == 0)
        {
            Console.Error.WriteLine($"No run folder under {runs} has both prune-result.json and test.jsonl.");
            return 1;
        }
        var table = new Table().AddColumns("task", "mode", "target", "score", "parameters", "run");
        foreach (var p in points)
            table.AddRow(p.Task, p.Mode, $"{p.Target:0.00}", $"{p.Metric} {p.Score:0.00}", $"{p.Parameters:N0}", Markup.Escape(p.Run));
        AnsiConsole.Write(table);

        foreach (var task in points.GroupBy(p => p.Task))
        {
            var plot = new Plot();
            foreach (var mode in task.GroupBy(p => p.Mode))
            {
                var line = plot.Add.Scatter(mode.Select(p => p.Target).ToArray(), mode.Select(p => p.Score).ToArray());
                line.LegendText = mode.Key == "Global" ? "modal-adaptive (one global target)" : "uniform (the target in every modality)";
                line.MarkerSize = 8;
            }
            if (teacher.TryGetValue(task.Key.ToLowerInvariant(), out var score))
            {
                var reference = plot.Add.HorizontalLine(score);
                reference.LegendText = $"teacher {score:0.0}";
                reference.LinePattern = LinePattern.Dashed;
                var kept = plot.Add.HorizontalLine(0.984 * score);
                kept.LegendText = "98.4% of the teacher";
                kept.LinePattern = LinePattern.Dotted;
            }
            var name = task.Key switch { "Vqa" => "VQA", "Nlvr2" => "NLVR2", _ => task.Key };
            plot.Title($"{name}: test score after pruning and shrink, the same budget at every point");
            plot.XLabel("target sparsity");
            plot.YLabel(task.First().Metric);
            plot.ShowLegend(Alignment.LowerLeft);
            var file = $"{output}-{task.Key.ToLowerInvariant()}.svg";
            plot.SaveSvg(file, 640, 420);
            if (args.Contains("--png")) plot.SavePng(Path.ChangeExtension(file, ".png"), 640, 420);
            AnsiConsole.MarkupLineInterpolated($"wrote [green]{file}[/]");
        }
        return 0;
    }

    private static Point? Read(string run)
    {
        var result = Path.Combine(run, "prune-result.json");
        var test = Path.Combine(run, "test.jsonl");
        if (!File.Exists(result) || !File.Exists(test)) return null;
        using var pruned = JsonDocument.Parse(File.ReadAllText(result));
        var line = File.ReadLines(test).LastOrDefault(l => l.Trim().Length > 0);
        if (line is null) return null;
        using var scored = JsonDocument.Parse(line);
        var task = pruned.RootElement.GetProperty("task").GetString()!;
        var metric = task switch
        {
            "Vqa" => "vqa_accuracy", "Nlvr2" => "nlvr2_accuracy", "Retrieval" => "tr_r1", "Captioning" => "cider_d",
            _ => throw new InvalidDataException($"{result}: unknown task {task}."),
        };
        var scores = scored.RootElement.GetProperty("scores");
        return new Point(task, pruned.RootElement.GetProperty("sparsity_mode").GetString()!, pruned.RootElement.GetProperty("target").GetDouble(),
            scores.GetProperty(metric).GetDouble(), metric, pruned.RootElement.GetProperty("parameters_after").GetInt64(), Path.GetFileName(run));
    }

    /// <summary>Task name -> test score, from a package set's scores.json (<c>{"vqa": {"test": 99.45, ...}, ...}</c>).</summary>
    private static Dictionary<string, double> TeacherScores(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.EnumerateObject()
            .Where(p => p.Value.TryGetProperty("test", out _))
            .ToDictionary(p => p.Name, p => p.Value.GetProperty("test").GetDouble());
    }
}
