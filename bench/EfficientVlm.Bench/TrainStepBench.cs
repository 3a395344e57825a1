using System.Diagnostics;
using EfficientVlm.Common;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Tasks;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Bench;

/// <summary>
/// VQA training-step time of model presets side by side in one process (forward, backward, clipping and an AdamW
/// step at batch 32, random weights and inputs: the time does not depend on their values), interleaved so machine
/// noise hits every preset alike. By default the demo teacher against the CPU teacher (docs/training.md).
/// </summary>
public static class TrainStepBench
{
    public static int Run(string[] args)
    {
        int threads = Args.Int(args, "--threads", 2);
        int steps = Args.Int(args, "--steps", 20);
        int batch = Args.Int(args, "--batch", 32);
        var names = (Args.String(args, "--presets") ?? "demo-teacher,cpu-teacher").Split(',');
        torch.set_num_threads(threads);
        torch.manual_seed(0);

        var models = names.Select(n =>
        {
            var model = new VlmModel(Presets.Get(n) with { Task = VlmTask.Vqa });
            model.train();
            return (Name: n, Model: model, Optimizer: torch.optim.AdamW(model.parameters(), 1e-4));
        }).ToList();
        var times = models.Select(_ => new List<double>()).ToArray();
        for (int i = -3; i < steps; i++)
            for (int m = 0; m < models.Count; m++)
            {
                double ms = Step(models[m].Model, models[m].Optimizer, batch);
                if (i >= 0) times[m].Add(ms);
            }

        var table = new Table().AddColumns("preset", "params (VQA)", "batch", "steps", "median ms", "min ms", "max ms", "steps/s", "time vs first");
        double reference = Quantiles.Median(times[0]);
        for (int m = 0; m < models.Count; m++)
        {
            double median = Quantiles.Median(times[m]);
            table.AddRow(models[m].Name, $"{ParameterCounts.Count(models[m].Model):N0}", $"{batch}", $"{steps}", $"{median:0}",
                $"{times[m].Min():0}", $"{times[m].Max():0}", $"{1000 / median:0.00}", $"{median / reference:0.00}x");
        }
        AnsiConsole.MarkupLine("[bold]VQA training step[/] (forward + backward + clip + AdamW, random inputs, 12 question tokens, 1 answer of 3 tokens each)");
        AnsiConsole.MarkupLine(BenchMachine.Describe(threads));
        AnsiConsole.Write(table);
        foreach (var m in models) { m.Optimizer.Dispose(); m.Model.Dispose(); }
        return 0;
    }

    private static double Step(VlmModel model, optim.Optimizer optimizer, int batch)
    {
        using var scope = torch.NewDisposeScope();
        var config = model.Config;
        var images = torch.randn(batch, 3, config.ImageSize, config.ImageSize);
        var ids = torch.randint(5, config.VocabSize, [batch, 12]);
        var padding = torch.ones(batch, 12, dtype: ScalarType.Int64);
        var answers = new VqaAnswers(torch.randint(5, config.VocabSize, [batch, 3]), torch.ones(batch, 3, dtype: ScalarType.Int64),
            torch.arange(batch), torch.ones(batch));
        var clock = Stopwatch.StartNew();
        optimizer.zero_grad();
        var loss = Vqa.Loss(model, images, ids, padding, answers);
        loss.backward();
        nn.utils.clip_grad_norm_(model.parameters(), 1.0);
        optimizer.step();
        return clock.Elapsed.TotalMilliseconds;
    }
}
