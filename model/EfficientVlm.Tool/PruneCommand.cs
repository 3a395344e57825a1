using System.CommandLine;
using System.Text.Json;
using EfficientVlm.Model.Jobs;
using EfficientVlm.Model.Pruning;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Training;
using Spectre.Console;

namespace EfficientVlm.Tool;

/// <summary><c>vlm prune</c>: modal-adaptive pruning of a fine-tuned compact model, then the physical shrink.</summary>
internal static class PruneCommand
{
    public static Command Create()
    {
        var task = new Option<string>("--task") { Required = true, Description = "vqa | nlvr2 | retrieval | captioning" };
        var student = new Option<DirectoryInfo>("--student") { Required = true, Description = "fine-tuned compact model (checkpoint folder)" };
        var teacher = new Option<DirectoryInfo>("--teacher") { Required = true, Description = "fine-tuned teacher of the same task (checkpoint folder)" };
        var target = new Option<double?>("--target") { Description = "global target sparsity of the prunable pool (paper: 0.35 VQA, 0.25 others)" };
        var data = new Option<DirectoryInfo>("--data") { Required = true };
        var output = new Option<DirectoryInfo>("--out") { Required = true, Description = "run folder; the shrunk model is written to <out>/shrunk" };
        var epochs = new Option<int>("--epochs") { DefaultValueFactory = _ => 2 };
        var warmup = new Option<double>("--warmup-epochs") { Description = "sparsity warm-up, in epochs", DefaultValueFactory = _ => 1 };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 32 };
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => 5e-5 };
        var maskLr = new Option<double>("--mask-lr") { Description = "learning rate of log_alpha and the lambdas (paper 0.01; NLVR2 0.1)", DefaultValueFactory = _ => 0.01 };
        var trainLimit = new Option<int?>("--train-limit");
        var evalLimit = new Option<int?>("--eval-limit");
        var uniform = new Option<bool>("--uniform")
        {
            Description = "ablation: the target on every modality's own sparsity instead of one global target (modal-adaptive, the method)",
        };
        var frozen = new Option<int?>("--frozen-mask-epochs", "--vqa-frozen-mask-epochs")
        {
            Description = "freeze the masks in the last N epochs, once the sparsity is within 0.02 of the target (only after the warm-up; 0: never; " +
                          "default: the method's, 1 for VQA, 0 for the other tasks)",
        };
        var stemTarget = new Option<double?>("--stem-target")
        {
            Description = "also prune the conv stem's channels, to this sparsity of its multiply-adds (e.g. 0.6; kept widths are multiples of 8)",
        };
        var command = new Command("prune", "Prune a fine-tuned compact model for its task (modal-adaptive, one global target), then shrink it.")
        {
            task, student, teacher, target, data, output, epochs, warmup, batch, lr, maskLr, trainLimit, evalLimit, Torch.Threads, uniform, frozen, stemTarget,
        };
        command.SetAction(async (parse, ct) =>
        {
            var dir = parse.GetValue(output)!.FullName;
            using var executor = Torch.Executor(parse);
            try
            {
                var which = TrainCommand.ParseTask(parse.GetValue(task)!);
                double goal = parse.GetValue(target) ?? TaskPruning.PaperTarget(which);
                var settings = new PipelineSettings
                {
                    PruneEpochs = parse.GetValue(epochs), PruneWarmupEpochs = parse.GetValue(warmup), BatchSize = parse.GetValue(batch),
                    PruneLearningRate = parse.GetValue(lr), MaskLearningRate = parse.GetValue(maskLr),
                    TrainLimit = parse.GetValue(trainLimit), EvalLimit = parse.GetValue(evalLimit),
                    Sparsity = parse.GetValue(uniform) ? SparsityMode.Uniform : SparsityMode.Global,
                    FrozenMaskEpochs = parse.GetValue(frozen), StemTarget = parse.GetValue(stemTarget),
                };
                TrainingResult result = null!;
                await AnsiConsole.Progress()
                    .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                    .StartAsync(async ctx =>
                    {
                        var bar = ctx.AddTask("prune", maxValue: 1);
                        var progress = new CallbackProgress<TrainingProgress>(p =>
                        {
                            bar.MaxValue = p.TotalSteps;
                            bar.Value = p.Step;
                            var kept = string.Join(" ", p.Parts.Where(kv => kv.Key.StartsWith("kept_", StringComparison.Ordinal))
                                .Select(kv => $"{kv.Key[5..]} {100 * kv.Value:0}%"));
                            bar.Description = Markup.Escape($"prune {which} step {p.Step}/{p.TotalSteps} task {p.Parts["task"]:0.000} " +
                                $"sparsity {100 * p.Parts["sparsity"]:0.0}%/{100 * p.Parts["target"]:0.0}% " +
                                (p.Parts.TryGetValue("stem_sparsity", out var stem) ? $"stem {100 * stem:0.0}%/{100 * p.Parts["stem_target"]:0.0}% " : "") +
                                $"FFN kept: {kept}" +
                                (p.Parts.GetValueOrDefault("frozen") > 0 ? " (masks frozen)" : ""));
                            if (p.Validation is not null || p.Step % 25 == 0)
                                File.AppendAllText(Path.Combine(dir, "log.tsv"),
                                    $"{p.Step}\t{p.Loss:0.0000}\t{string.Join(" ", p.Parts.Select(kv => $"{kv.Key} {kv.Value:0.0000}"))}\t{p.Validation?.ToString("0.0000") ?? ""}\n");
                        });
                        result = await Pipeline.PruneAsync(executor, parse.GetValue(student)!.FullName, parse.GetValue(teacher)!.FullName, which, goal,
                            parse.GetValue(data)!.FullName, settings, dir, new StageHooks(progress), ct);
                    });
                var report = await Pipeline.ShrinkAsync(executor, dir, Path.Combine(dir, "shrunk"), parse.GetValue(data)!.FullName);
                var table = new Table().AddColumns("modality", "heads kept", "FFN neurons kept");
                foreach (var m in report.KeptHeads.Keys)
                    table.AddRow(m, $"{100 * report.KeptHeads[m]:0.0}%", $"{100 * report.KeptNeurons[m]:0.0}%");
                AnsiConsole.Write(table);
                if (report.StemWidths is { } widths && !widths.Before.SequenceEqual(widths.After))
                    AnsiConsole.WriteLine($"stem widths {string.Join("/", widths.Before)} -> {string.Join("/", widths.After)}");
                AnsiConsole.WriteLine($"pruned {which} (target {100 * goal:0}%): parameters {report.ParametersBefore:N0} -> {report.ParametersAfter:N0}; " +
                    $"best validation {result.BestValidation:0.0000} at step {result.BestStep}; shrunk model {dir}/shrunk ({report.Hash[..12]})");
                File.WriteAllText(Path.Combine(dir, "prune-result.json"), JsonSerializer.Serialize(new
                {
                    task = which.ToString(), target = goal, sparsity_mode = settings.Sparsity.ToString(), report.KeptHeads, report.KeptNeurons,
                    parameters_before = report.ParametersBefore, parameters_after = report.ParametersAfter, result.BestValidation, result.BestStep,
                    seconds = result.Elapsed.TotalSeconds, hash = report.Hash, stem_target = settings.StemTarget,
                    stem_widths_before = report.StemWidths?.Before, stem_widths_after = report.StemWidths?.After,
                }, new JsonSerializerOptions { WriteIndented = true }));
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
