using EfficientVlm.Grains.Abstractions;
using Spectre.Console;

namespace EfficientVlm.Cli;

/// <summary>How the CLI shows models, variants and their jobs.</summary>
internal static class Views
{
    public static string Short(string? hash) => hash is null ? "-" : hash[..Math.Min(12, hash.Length)];

    public static string Status(string status, string? error) =>
        error is null ? Markup.Escape(status) : $"{Markup.Escape(status)} [yellow]({Markup.Escape(error.Length > 60 ? error[..60] + "..." : error)})[/]";

    public static string Progress(JobProgress? p) => p is null ? "-"
        : $"{p.Stage} {p.Step}/{p.TotalSteps}" + (p.ExpectedSparsity is double s ? $" sparsity {100 * s:0.0}%" : "");

    private static string Line(JobProgress p) =>
        $"{p.Stage} step {p.Step}/{p.TotalSteps} loss {p.Loss:0.000}" +
        (p.ExpectedSparsity is double s ? $" sparsity {100 * s:0.0}%" + (p.Parts.TryGetValue("target", out var t) ? $"/{100 * t:0.0}%" : "") : "") +
        (p.Parts.TryGetValue("stem_sparsity", out var stem) ? $" stem {100 * stem:0.0}%" : "") +
        string.Concat(p.Parts.Where(kv => kv.Key.StartsWith("kept_", StringComparison.Ordinal)).Select(kv => $" {kv.Key[5..]} {100 * kv.Value:0}%")) +
        $" {p.StepsPerSecond:0.00} it/s";

    private static void History(IReadOnlyList<JobEvent> history)
    {
        if (history.Count == 0) return;
        var table = new Table().Title("history").AddColumns("at (UTC)", "stage", "event", "step", "silo");
        foreach (var e in history)
            table.AddRow(e.At.UtcDateTime.ToString("HH:mm:ss"), e.Stage, Markup.Escape(e.What), e.Step?.ToString() ?? "", Markup.Escape(e.Silo ?? ""));
        AnsiConsole.Write(table);
    }

    public static void Write(CompactModelInfo m)
    {
        var grid = new Grid().AddColumns(2);
        grid.AddRow("id", m.Id);
        grid.AddRow("preset", m.Preset);
        grid.AddRow("status", Status(m.Status.ToString(), m.Error));
        grid.AddRow("teacher", m.Teacher);
        grid.AddRow("student", m.Student ?? "-");
        grid.AddRow("dataset", m.Dataset ?? "-");
        foreach (var (task, hash) in m.TaskTeachers ?? []) grid.AddRow($"{task.ToString().ToLowerInvariant()} teacher", hash);
        if (m.Progress is { } p) grid.AddRow("progress", Markup.Escape(Line(p)));
        AnsiConsole.Write(grid);
        History(m.History);
    }

    private const string TeacherPrefix = "teacher:";

    private static string Ratio(double model, double teacher) => teacher > 0 ? $"{100 * model / teacher:0.0}%" : "";

    public static void Write(VariantInfo v)
    {
        var grid = new Grid().AddColumns(2);
        grid.AddRow("id", v.Id);
        grid.AddRow("task", v.Spec.Task.ToString());
        grid.AddRow("compact model", v.Spec.CompactModel);
        grid.AddRow("target sparsity", $"{100 * v.Spec.TargetSparsity:0}%");
        grid.AddRow("dataset", v.Spec.Dataset);
        grid.AddRow("stage", Status(v.Stage.ToString(), v.Error));
        grid.AddRow("model", v.Model ?? "-");
        if (v.Progress is { } p) grid.AddRow("progress", Markup.Escape(Line(p)));
        AnsiConsole.Write(grid);
        History(v.History);
        if (v.Metrics is not { } m) return;
        var scores = new Table().Title("test split").AddColumns("", "variant", "teacher", "variant / teacher");
        scores.AddRow(m.Metric, $"{m.Score:0.00}", $"{m.TeacherScore:0.00}", Ratio(m.Score, m.TeacherScore));
        // the teacher's scores of the same split travel as "teacher:<name>": each goes beside the variant's
        foreach (var (name, value) in m.Scores.Where(kv => kv.Key != m.Metric && !kv.Key.StartsWith(TeacherPrefix, StringComparison.Ordinal)))
        {
            bool has = m.Scores.TryGetValue(TeacherPrefix + name, out var teacher);
            scores.AddRow(Markup.Escape(name), $"{value:0.00}", has ? $"{teacher:0.00}" : "", has ? Ratio(value, teacher) : "");
        }
        scores.AddRow("parameters", $"{m.Parameters:N0}", $"{m.TeacherParameters:N0}", $"{100.0 * m.Parameters / m.TeacherParameters:0.0}%");
        scores.AddRow("speed-up batch 1 / 32", $"{m.SpeedUpBatch1:0.00}x / {m.SpeedUpBatch32:0.00}x", "1x", "");
        AnsiConsole.Write(scores);
        var kept = new Table().Title("kept after pruning").AddColumns("modality", "attention heads", "FFN neurons");
        foreach (var modality in m.KeptHeads.Keys)
            kept.AddRow(modality, $"{100 * m.KeptHeads[modality]:0.0}%", $"{100 * m.KeptNeurons.GetValueOrDefault(modality, 1):0.0}%");
        AnsiConsole.Write(kept);
        if (m.Stem is { } stem && !stem.Before.SequenceEqual(stem.After))
            AnsiConsole.WriteLine($"conv stem channels (vision): {string.Join("/", stem.Before)} -> {string.Join("/", stem.After)}");
    }

    /// <summary>
    /// Polls until <paramref name="done"/>; a live progress bar per stage on a terminal, one line per
    /// change when the output is redirected (logs stay short).
    /// </summary>
    public static async Task<T> FollowAsync<T>(CancellationToken ct, Func<Task<T>> fetch, Func<T, bool> done, Func<T, JobProgress?> progress,
        Func<T, string> stage)
    {
        var current = await fetch();
        if (Console.IsOutputRedirected)
        {
            string last = "";
            var lastAt = DateTime.MinValue;
            while (true)
            {
                var p = progress(current);
                var line = p is null ? stage(current) : Line(p);
                if (line != last && (p is null || DateTime.UtcNow - lastAt > TimeSpan.FromSeconds(5) || p.Step == p.TotalSteps || !line.StartsWith(p.Stage)))
                {
                    Console.WriteLine($"{DateTime.UtcNow:HH:mm:ss} {line}");
                    (last, lastAt) = (line, DateTime.UtcNow);
                }
                if (done(current)) return current;
                await Task.Delay(1000, ct);
                current = await fetch();
            }
        }
        await AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async ctx =>
            {
                var bars = new Dictionary<string, ProgressTask>();
                while (true)
                {
                    var name = stage(current);
                    if (!bars.TryGetValue(name, out var bar))
                    {
                        foreach (var other in bars.Values) other.Value = other.MaxValue;
                        bars[name] = bar = ctx.AddTask(Markup.Escape(name), maxValue: 1);
                    }
                    if (progress(current) is { } p && p.Stage == name)
                    {
                        bar.MaxValue = Math.Max(1, p.TotalSteps);
                        bar.Value = p.Step;
                        bar.Description = Markup.Escape(Line(p));
                    }
                    if (done(current))
                    {
                        foreach (var b in bars.Values) b.StopTask();
                        return;
                    }
                    await Task.Delay(500, ct);
                    current = await fetch();
                }
            });
        return current;
    }
}
