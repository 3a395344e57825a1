using EfficientVlm.Model.Runtime;
using System.CommandLine;
using EfficientVlm.Model.Data;
using EfficientVlm.Model.Data.Readers;
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

        var renderer = new Option<string>("--renderer")
        {
            Description = "coverage (default) | supersampled: a second renderer of the spec, for checking models on images another renderer drew",
            DefaultValueFactory = _ => "coverage",
        };
        renderer.AcceptOnlyFromAmong("coverage", "supersampled");
        var generate = new Command("generate", "Write a ShapesWorld dataset in the official COCO / VQAv2 / NLVR2 / X-VLM formats.")
        {
            output, seed, trainImages, evalImages, questions, trainPairs, evalPairs, renderer,
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
                    summary = Generator.Generate(dir, parse.GetValue(seed), sizes, progress, ct,
                        parse.GetValue(renderer) == "supersampled" ? RenderStyle.Supersampled : RenderStyle.Coverage);
                });
            var table = new Table().AddColumns("split", "images", "captions", "questions", "NLVR2 pairs");
            foreach (var (split, c) in summary.Splits)
                table.AddRow(split, $"{c.Images:N0}", $"{c.Captions:N0}", $"{c.Questions:N0}", $"{c.Pairs:N0}");
            AnsiConsole.Write(table);
            var stages = string.Join(", ", summary.Stages.Select(s => $"{s.Key} {s.Value.TotalSeconds:0.0} s"));
            AnsiConsole.MarkupLineInterpolated($"wrote [green]{dir}[/] in {summary.Elapsed.TotalSeconds:0.0} s ({stages})");
            return Task.FromResult(0);
        });
        var folder = new Option<DirectoryInfo>("--data") { Description = "a folder written by `vlm data generate`", Required = true };
        var stats = new Command("stats", "Per-split counts, the answer distribution and the trivial baselines.") { folder };
        stats.SetAction(parse =>
        {
            var dir = parse.GetValue(folder)!.FullName;
            DatasetStats result;
            try
            {
                result = DatasetStats.Compute(dir);
            }
            catch (Exception e) when (e is DatasetFormatException or FileNotFoundException)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {e.Message}");
                return 1;
            }
            var splits = new Table().Title("splits").AddColumns("split", "images", "captions", "VQA questions", "NLVR2 pairs", "NLVR2 true");
            foreach (var s in result.Splits)
                splits.AddRow(s.Split, $"{s.Images:N0}", $"{s.Captions:N0}", $"{s.Questions:N0}", $"{s.Pairs:N0}", $"{s.TruePairs:N0}");
            AnsiConsole.Write(splits);

            int total = result.TrainAnswers.Sum(a => a.Count);
            var chart = new BarChart().Label("train answers (top 20 of " + result.TrainAnswers.Count + ")").Width(80);
            foreach (var (answer, count) in result.TrainAnswers.Take(20)) chart.AddItem(answer, Math.Round(100.0 * count / total, 1), Color.Aqua);
            AnsiConsole.Write(chart);
            var types = new Table().Title("train question types").AddColumns("question_type", "questions");
            foreach (var (type, count) in result.TrainQuestionTypes.OrderByDescending(t => t.Value)) types.AddRow(type, $"{count:N0}");
            AnsiConsole.Write(types);

            var b = result.Baselines;
            var baselines = new Table().Title("trivial baselines and the retrieval ceiling (fitted on train, scored on test)").AddColumns("task", "baseline", "metric", "value");
            baselines.AddRow("VQA", "majority answer per question type", "VQA accuracy", $"{100 * b.VqaMajorityPerQuestionType:0.00}");
            baselines.AddRow("VQA", "majority answer overall", "VQA accuracy", $"{100 * b.VqaMajorityOverall:0.00}");
            baselines.AddRow("NLVR2", "majority label", "accuracy", $"{100 * b.NlvrMajority:0.00}");
            var r = b.RandomRetrieval;
            baselines.AddRow("retrieval", "random ranking (expected)", "TR R@1/5/10", $"{100 * r.TextR1:0.00} / {100 * r.TextR5:0.00} / {100 * r.TextR10:0.00}");
            baselines.AddRow("retrieval", "random ranking (expected)", "IR R@1/5/10", $"{100 * r.ImageR1:0.00} / {100 * r.ImageR5:0.00} / {100 * r.ImageR10:0.00}");
            var c = b.ImageRetrievalCeiling;
            baselines.AddRow("retrieval", "ceiling: identical captions rank images alike", "IR R@1/5/10", $"{100 * c.R1:0.00} / {100 * c.R5:0.00} / {100 * c.R10:0.00}");
            baselines.AddRow("captioning", Markup.Escape($"most frequent train caption: \"{b.MostFrequentCaption}\""), "BLEU-4 / CIDEr-D",
                $"{100 * b.MostFrequentCaptionBleu4:0.00} / {100 * b.MostFrequentCaptionCiderD:0.00}");
            AnsiConsole.Write(baselines);
            AnsiConsole.MarkupLine("[grey]scores on the x100 scale[/]");
            return 0;
        });
        return new Command("data", "ShapesWorld data: generate, stats, examples.") { generate, stats, Examples(folder) };
    }

    /// <summary>
    /// <c>vlm data examples</c>: records of a split with what they should get, one per line, tab-separated (image path(s),
    /// text, expected), for scripts that ask a model and show the expected answer beside the given one.
    /// </summary>
    private static Command Examples(Option<DirectoryInfo> folder)
    {
        var task = new Option<string>("--task") { Description = "vqa (image, question, commonest answer) | nlvr2 (left, right, statement, true/false)", Required = true };
        task.AcceptOnlyFromAmong("vqa", "nlvr2");
        var split = new Option<string>("--split") { DefaultValueFactory = _ => "test" };
        var limit = new Option<int>("--limit") { Description = "at most this many records", DefaultValueFactory = _ => 10 };
        var perImage = new Option<int>("--per-image") { Description = "VQA: at most this many questions of one image", DefaultValueFactory = _ => 2 };
        var command = new Command("examples", "Records of a split with their expected answers, tab-separated: image(s), text, expected.")
        {
            folder, task, split, limit, perImage,
        };
        command.SetAction(parse =>
        {
            var root = parse.GetValue(folder)!.FullName;
            var name = parse.GetValue(split)!;
            int n = parse.GetValue(limit);
            try
            {
                if (parse.GetValue(task) == "vqa")
                {
                    var items = DataFolder.Vqa(root, name);
                    foreach (var item in items.GroupBy(i => i.ImageId).SelectMany(g => g.Take(parse.GetValue(perImage))).Take(n))
                    {
                        var expected = item.MultipleChoiceAnswer ?? item.Answers.GroupBy(a => a).OrderByDescending(g => g.Count()).Select(g => g.Key).FirstOrDefault() ?? "";
                        Console.WriteLine($"{item.ImagePath}\t{item.Question}\t{expected}");
                    }
                }
                else
                {
                    var items = DataFolder.Nlvr(root, name);
                    foreach (var item in items.Take(n))
                        Console.WriteLine($"{item.LeftImage}\t{item.RightImage}\t{item.Sentence}\t{(item.Label ? "true" : "false")}");
                }
            }
            catch (Exception e) when (e is DatasetFormatException or FileNotFoundException or DirectoryNotFoundException)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return 1;
            }
            return 0;
        });
        return command;
    }
}
