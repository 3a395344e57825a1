using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Jobs;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Tasks;
using EfficientVlm.Model.Training;
using Spectre.Console;

namespace EfficientVlm.Tool;

/// <summary><c>vlm eval</c>: a checkpoint's task score on a split, with the official metric; appends a JSON line to --results.</summary>
internal static class EvalCommand
{
    public static Command Create()
    {
        var model = new Option<DirectoryInfo>("--model") { Description = "checkpoint folder", Required = true };
        var data = new Option<DirectoryInfo>("--data") { Description = "data folder", Required = true };
        var task = new Option<string>("--task") { Description = "vqa | nlvr2 | retrieval | captioning (default: the model's task)" };
        var split = new Option<string>("--split") { DefaultValueFactory = _ => "test" };
        var limit = new Option<int?>("--limit") { Description = "only the first N records" };
        var k = new Option<int>("--k") { Description = "VQA answers / retrieval candidates rescored", DefaultValueFactory = _ => 16 };
        var results = new Option<FileInfo?>("--results") { Description = "append the scores as one JSON line to this file" };
        var label = new Option<string?>("--label") { Description = "name of the row in --results" };
        var threads = new Option<int>("--threads") { DefaultValueFactory = _ => Environment.ProcessorCount };
        var command = new Command("eval", "Score a checkpoint on a split with the task's official metric.") { model, data, task, split, limit, k, results, label, threads };
        command.SetAction(async (parse, ct) =>
        {
            using var executor = new DeviceExecutor(new DeviceExecutorOptions { Device = "auto", TorchThreads = parse.GetValue(threads) });
            try
            {
                var scores = await executor.RunAsync(ctx =>
                {
                    using var m = Checkpoint.Load(parse.GetValue(model)!.FullName, ctx.Device);
                    m.eval();
                    var which = parse.GetValue(task) is { } t ? TrainCommand.ParseTask(t)
                        : m.Config.Task == VlmTask.Pretrain ? VlmTask.Retrieval : m.Config.Task; // a task-agnostic model is scored by retrieval
                    var taskData = new TaskData(parse.GetValue(data)!.FullName, m.Config, evalLimit: parse.GetValue(limit), trainLimit: null);
                    var s = parse.GetValue(split)!;
                    var watch = Stopwatch.StartNew();
                    var scores = Pipeline.Score(m, which, taskData, s, parse.GetValue(limit), ctx.Device, parse.GetValue(k));
                    scores["parameters"] = ParameterCounts.Count(m);
                    scores["seconds"] = watch.Elapsed.TotalSeconds;
                    return (which, scores);
                });
                var table = new Table().AddColumns("metric", "value");
                foreach (var (name, value) in scores.scores) table.AddRow(name, name == "parameters" ? $"{value:N0}" : $"{value:0.00}");
                AnsiConsole.MarkupLineInterpolated($"[bold]{scores.which}[/] on {parse.GetValue(split)}");
                AnsiConsole.Write(table);
                if (parse.GetValue(results) is { } file)
                    File.AppendAllText(file.FullName, JsonSerializer.Serialize(new
                    {
                        label = parse.GetValue(label) ?? parse.GetValue(model)!.Name, task = scores.which.ToString(), split = parse.GetValue(split),
                        scores = scores.scores, date = DateTime.UtcNow,
                    }) + "\n");
                return 0;
            }
            catch (Exception e) when (UserErrors.Is(e))
            {
                return UserErrors.Report(e);
            }
        });
        return command;
    }
}
