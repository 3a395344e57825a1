using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Jobs;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Data.ShapesWorld;
using EfficientVlm.Model.Metrics;
using EfficientVlm.Model.Modules;
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
        var rescore = new Option<string>("--rescore")
        {
            Description = "retrieval: itm+itc (ITM log-odds plus the ITC logit) or itm (X-VLM's rule, the ITM match logit alone)",
            DefaultValueFactory = _ => "itm+itc",
        };
        var results = new Option<FileInfo?>("--results") { Description = "append the scores as one JSON line to this file" };
        var label = new Option<string?>("--label") { Description = "name of the row in --results" };
        var byForm = new Option<bool>("--by-form")
        {
            Description = "also score each form apart: VQA by question type, NLVR2 by ShapesWorld statement family",
        };
        var command = new Command("eval", "Score a checkpoint on a split with the task's official metric.") { model, data, task, split, limit, k, rescore, results, label, Torch.Threads, byForm };
        command.SetAction(async (parse, ct) =>
        {
            using var executor = Torch.Executor(parse);
            try
            {
                var scores = await executor.RunAsync(ctx =>
                {
                    using var m = Checkpoint.Load(parse.GetValue(model)!.FullName, ctx.Device);
                    m.eval();
                    var which = parse.GetValue(task) is { } t ? TrainCommand.ParseTask(t)
                        : m.Config.Task == VlmTask.Pretrain ? VlmTask.Retrieval : m.Config.Task; // a task-agnostic model is scored by retrieval
                    if (parse.GetValue(byForm) && which is not (VlmTask.Vqa or VlmTask.Nlvr2))
                        throw new ArgumentException($"--by-form applies to vqa and nlvr2, not {which}.");
                    var taskData = new TaskData(parse.GetValue(data)!.FullName, m.Config, evalLimit: parse.GetValue(limit), trainLimit: null,
                        model: parse.GetValue(model)!.FullName);
                    var s = parse.GetValue(split)!;
                    var retrievalScore = Retrieval.ParseScore(parse.GetValue(rescore)!);
                    var watch = Stopwatch.StartNew();
                    var (scores, forms) = parse.GetValue(byForm)
                        ? Pipeline.ScoreByForm(m, which, taskData, s, parse.GetValue(limit), ctx.Device, parse.GetValue(k))
                        : (Pipeline.Score(m, which, taskData, s, parse.GetValue(limit), ctx.Device, parse.GetValue(k), retrievalScore), null);
                    scores["parameters"] = ParameterCounts.Count(m);
                    scores["seconds"] = watch.Elapsed.TotalSeconds;
                    return (which, scores, forms);
                });
                var table = new Table().AddColumns("metric", "value");
                foreach (var (name, value) in scores.scores) table.AddRow(name, name == "parameters" ? $"{value:N0}" : $"{value:0.00}");
                AnsiConsole.MarkupLineInterpolated($"[bold]{scores.which}[/] on {parse.GetValue(split)}");
                AnsiConsole.Write(table);
                if (scores.forms is not null) AnsiConsole.Write(FormTable(scores.forms));
                if (parse.GetValue(results) is { } file)
                    File.AppendAllText(file.FullName, JsonSerializer.Serialize(new
                    {
                        label = parse.GetValue(label) ?? parse.GetValue(model)!.Name, task = scores.which.ToString(), split = parse.GetValue(split),
                        // as objects: each row written with all the fields of its own record
                        scores = scores.scores, by_form = scores.forms?.Cast<object>().ToList(), date = DateTime.UtcNow,
                    }, ResultsJson) + "\n");
                return 0;
            }
            catch (Exception e) when (UserErrors.Is(e))
            {
                return UserErrors.Report(e);
            }
        });
        return command;
    }

    private static readonly JsonSerializerOptions ResultsJson = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    private static Table FormTable(IReadOnlyList<IFormScore> forms)
    {
        var table = new Table();
        switch (forms.FirstOrDefault())
        {
            case VqaFormScore:
                table.AddColumns("question type", "n", "accuracy", "answers given", "answers expected");
                foreach (var f in forms.Cast<VqaFormScore>())
                    table.AddRow(f.Form, $"{f.Count}", $"{f.Accuracy:0.0}", $"{f.AnswersGiven}", $"{f.AnswersExpected}");
                break;
            case NlvrFormScore:
                table.AddColumns("statement family", "n", "accuracy", "held true %", "true %");
                foreach (var f in forms.Cast<NlvrFormScore>())
                    table.AddRow(f.Form, $"{f.Count}", $"{f.Accuracy:0.0}", $"{f.HeldTrue:0.0}", $"{f.AreTrue:0.0}");
                break;
        }
        return table;
    }
}
