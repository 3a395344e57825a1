using System.Diagnostics;
using EfficientVlm.Common;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Images;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Serving;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Bench;

/// <summary>
/// What a user waits for: a task's serving call (<see cref="ServingModel"/>: VQA answers ranked over the answer list,
/// NLVR2 verdicts over two images, captions by beam search, texts ranked for image queries) on real records of a split, for a teacher and its variants
/// side by side in one process. Every repeat times each model once, in alternating order, so machine noise falls on all
/// alike; the speed-up is the ratio of medians, and its spread the 10th-90th percentile of the per-repeat ratios.
/// </summary>
public static class TaskLatencyBench
{
    public static int Run(string[] args)
    {
        var folders = Args.String(args, "--models")?.Split(',', StringSplitOptions.RemoveEmptyEntries);
        var data = Args.String(args, "--data");
        if (folders is not { Length: >= 2 } || data is null)
        {
            Console.Error.WriteLine("task-latency needs --models TEACHER,VARIANT[,...] (serving bundles or packages) and --data DIR");
            return 2;
        }
        var split = Args.String(args, "--split") ?? "test";
        int[] batches = (Args.String(args, "--batches") ?? "1,32").Split(',').Select(int.Parse).ToArray();
        int repeats = Args.Int(args, "--repeats", 30), warmup = Args.Int(args, "--warmup", 3), threads = Args.Int(args, "--threads", 2);
        if (batches.Any(b => b < 1) || repeats < 2 || warmup < 0) throw new ArgumentException("Batches must be positive, repeats at least 2.");
        torch.set_num_threads(threads);
        var device = torch.CPU;

        var models = folders.Select(f => (Name: Path.TrimEndingDirectorySeparator(f), Model: ServingModel.Load(f, device))).ToList();
        try
        {
            var task = models[0].Model.Config.Task;
            if (models.Any(m => m.Model.Config.Task != task)) throw new ArgumentException("Every model must be of the teacher's task.");
            var calls = Calls(task, data, split, batches.Max(), models.Select(m => m.Model).ToList(), device);
            var table = new Table().AddColumns("model", "params", "batch", "repeats", "median ms", "p10-p90 ms", "speed-up", "per-repeat p10-p90");
            foreach (int batch in batches)
            {
                var times = models.Select(_ => new List<double>()).ToArray();
                for (int r = -warmup; r < repeats; r++)
                {
                    var order = Enumerable.Range(0, models.Count);
                    foreach (int m in r % 2 == 0 ? order : order.Reverse())
                    {
                        var sw = Stopwatch.StartNew();
                        calls[m](batch);
                        if (r >= 0) times[m].Add(sw.Elapsed.TotalMilliseconds);
                    }
                }
                for (int m = 0; m < models.Count; m++)
                {
                    var sorted = times[m].Order().ToList();
                    var ratios = times[0].Zip(times[m], (t, c) => t / c).Order().ToList();
                    table.AddRow(models[m].Name, $"{ParameterCounts.Count(models[m].Model.Model):N0}", $"{batch}", $"{repeats}",
                        $"{Quantiles.Median(sorted):0.00}", $"{Quantiles.NearestRank(sorted, 0.1):0.00}-{Quantiles.NearestRank(sorted, 0.9):0.00}",
                        m == 0 ? "" : $"{Quantiles.Median(times[0]) / Quantiles.Median(sorted):0.00}x",
                        m == 0 ? "" : $"{Quantiles.NearestRank(ratios, 0.1):0.00}-{Quantiles.NearestRank(ratios, 0.9):0.00}x");
                }
            }
            AnsiConsole.MarkupLineInterpolated($"[bold]{task} serving latency[/], teacher first ({split} records of {data}; eval, no_grad)");
            AnsiConsole.MarkupLine(Markup.Escape(BenchMachine.Describe(threads)));
            AnsiConsole.Write(table);
            return 0;
        }
        finally
        {
            foreach (var (_, model) in models) model.Dispose();
        }
    }

    /// <summary>For each model, a call that serves the first <c>batch</c> records (decoded once, at the model's image size).</summary>
    private static List<Action<int>> Calls(VlmTask task, string data, string split, int count, IReadOnlyList<ServingModel> models, Device device)
    {
        var loader = new ImageLoader();
        List<float[]> Decode(IEnumerable<string> paths, int size) => paths.Select(p => loader.Load(File.ReadAllBytes(p), size)).ToList();
        switch (task)
        {
            case VlmTask.Vqa:
            {
                var items = DataFolder.Vqa(data, split).Take(count).ToList();
                var questions = items.Select(i => i.Question).ToList();
                return models.Select(m =>
                {
                    var images = Decode(items.Select(i => i.ImagePath), m.Config.ImageSize);
                    return (Action<int>)(b => m.Vqa(images.Take(b).ToList(), questions.Take(b).ToList(), device));
                }).ToList();
            }
            case VlmTask.Nlvr2:
            {
                var items = DataFolder.Nlvr(data, split).Take(count).ToList();
                var statements = items.Select(i => i.Sentence).ToList();
                return models.Select(m =>
                {
                    var (left, right) = (Decode(items.Select(i => i.LeftImage), m.Config.ImageSize), Decode(items.Select(i => i.RightImage), m.Config.ImageSize));
                    return (Action<int>)(b => m.Nlvr(left.Take(b).ToList(), right.Take(b).ToList(), statements.Take(b).ToList(), device));
                }).ToList();
            }
            case VlmTask.Captioning:
            {
                var paths = DataFolder.Captions(data, split).Select(i => i.ImagePath).Take(count).ToList();
                return models.Select(m =>
                {
                    var images = Decode(paths, m.Config.ImageSize);
                    return (Action<int>)(b => m.Caption(images.Take(b).ToList(), device));
                }).ToList();
            }
            case VlmTask.Retrieval:
            {
                // text retrieval as served: image queries ranked against a gallery of captions embedded once (not timed)
                var items = DataFolder.Captions(data, split).Take(Math.Max(count, 100)).ToList();
                var texts = items.SelectMany(i => i.Captions).Distinct().ToList();
                return models.Select(m =>
                {
                    var images = Decode(items.Select(i => i.ImagePath), m.Config.ImageSize);
                    var gallery = m.EmbedGallery(items.Select(i => $"{i.ImageId}").ToList(), images, texts, device);
                    return (Action<int>)(b => m.RankTexts(gallery, images.Take(b).ToList(), 10, device));
                }).ToList();
            }
            default:
                throw new ArgumentException($"task-latency times VQA, NLVR2, retrieval and captioning calls, not {task}.");
        }
    }
}
