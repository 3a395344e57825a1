using System.CommandLine;
using EfficientVlm.Model.Data.ShapesWorld;
using Spectre.Console;

namespace EfficientVlm.Tool;

internal static class DataCommand
{
    public static Command Create()
    {
        var output = new Option<DirectoryInfo>("--out") { Description = "output folder", Required = true };
        var seed = new Option<int>("--seed") { Description = "random seed: the same seed gives the same bytes", DefaultValueFactory = _ => 1 };
        var defaults = new GeneratorSizes();
        var trainImages = new Option<int>("--train-images") { DefaultValueFactory = _ => defaults.TrainImages };
        var evalImages = new Option<int>("--eval-images") { Description = "images in val and in test", DefaultValueFactory = _ => defaults.EvalImages };
        var questions = new Option<int>("--questions-per-image") { DefaultValueFactory = _ => defaults.QuestionsPerImage };
        var trainPairs = new Option<int>("--train-pairs") { Description = "NLVR2 pairs in train (even)", DefaultValueFactory = _ => defaults.TrainPairs };
        var evalPairs = new Option<int>("--eval-pairs") { Description = "NLVR2 pairs in val and in test (even)", DefaultValueFactory = _ => defaults.EvalPairs };

        var generate = new Command("generate", "Write a ShapesWorld dataset in the official COCO / VQAv2 / NLVR2 / X-VLM formats.")
        {
            output, seed, trainImages, evalImages, questions, trainPairs, evalPairs,
        };
        generate.SetAction((parse, ct) =>
        {
            var sizes = new GeneratorSizes
            {
                TrainImages = parse.GetValue(trainImages),
                EvalImages = parse.GetValue(evalImages),
                QuestionsPerImage = parse.GetValue(questions),
                TrainPairs = parse.GetValue(trainPairs),
                EvalPairs = parse.GetValue(evalPairs),
            };
            try
            {
                sizes.Validate();
            }
            catch (ArgumentException e)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {e.Message}");
                return Task.FromResult(2);
            }
            var dir = parse.GetValue(output)!.FullName;
            GeneratorSummary summary = null!;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var tasks = new Dictionary<string, ProgressTask>();
                    var progress = new CallbackProgress<GeneratorProgress>(p =>
                    {
                        lock (tasks)
                        {
                            if (!tasks.TryGetValue(p.Stage, out var task))
                                tasks[p.Stage] = task = ctx.AddTask(p.Stage, maxValue: Math.Max(1, p.Total));
                            task.Value = p.Done;
                        }
                    });
                    summary = Generator.Generate(dir, parse.GetValue(seed), sizes, progress, ct);
                });
            var table = new Table().AddColumns("split", "images", "captions", "questions", "NLVR2 pairs");
            foreach (var (split, c) in summary.Splits)
                table.AddRow(split, $"{c.Images:N0}", $"{c.Captions:N0}", $"{c.Questions:N0}", $"{c.Pairs:N0}");
            AnsiConsole.Write(table);
            var stages = string.Join(", ", summary.Stages.Select(s => $"{s.Key} {s.Value.TotalSeconds:0.0} s"));
            AnsiConsole.MarkupLineInterpolated($"wrote [green]{dir}[/] in {summary.Elapsed.TotalSeconds:0.0} s ({stages})");
            return Task.FromResult(0);
        });
        return new Command("data", "ShapesWorld data: generate, stats.") { generate };
    }
}
