using System.CommandLine;
using System.Text.Json;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Pruning;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Training;
using Spectre.Console;
using TorchSharp;

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
        var threads = new Option<int>("--threads") { DefaultValueFactory = _ => Environment.ProcessorCount };
        var command = new Command("prune", "Prune a fine-tuned compact model for its task (modal-adaptive, one global target), then shrink it.")
        {
            task, student, teacher, target, data, output, epochs, warmup, batch, lr, maskLr, trainLimit, evalLimit, threads,
        };
        command.SetAction(async (parse, ct) =>
        {
            var dir = parse.GetValue(output)!.FullName;
            using var executor = new DeviceExecutor(new DeviceExecutorOptions { Device = "auto", TorchThreads = parse.GetValue(threads) });
            try
            {
                var which = TrainCommand.ParseTask(parse.GetValue(task)!);
                double goal = parse.GetValue(target) ?? TaskPruning.PaperTarget(which);
                var setup = await executor.RunAsync(_ =>
                {
                    torch.manual_seed(1);
                    var s = Checkpoint.Load(parse.GetValue(student)!.FullName);
                    var t = Checkpoint.Load(parse.GetValue(teacher)!.FullName);
                    if (s.Config.Task != which || t.Config.Task != which)
                        throw new ArgumentException($"Both models must be fine-tuned for {which} (student: {s.Config.Task}, teacher: {t.Config.Task}).");
                    foreach (var p in t.parameters()) p.requires_grad = false;
                    var d = new TaskData(parse.GetValue(data)!.FullName, s.Config, parse.GetValue(trainLimit), parse.GetValue(evalLimit));
                    var masks = Scopes.Keep(new PruningMasks(s.Config));
                    return (Student: s, Teacher: t, Data: d, Masks: masks);
                });
                int b = parse.GetValue(batch);
                ITrainingStageRunner runner = which switch
                {
                    VlmTask.Vqa => Runner(new VqaStage(setup.Student, setup.Data, b, 1), TaskPruning.Vqa(setup.Student, setup.Teacher),
                        (d, g) => Evaluation.Vqa(setup.Student, setup.Data.Vqa("val"), setup.Data.Collate, setup.Data.AnswerList, d, gates: g)),
                    VlmTask.Nlvr2 => Runner(new NlvrStage(setup.Student, setup.Data, b, 1), TaskPruning.Nlvr(setup.Student, setup.Teacher),
                        (d, g) => Evaluation.Nlvr(setup.Student, setup.Data.Nlvr("val"), setup.Data.Collate, d, gates: g)),
                    VlmTask.Retrieval => Runner(new RetrievalStage(setup.Student, setup.Data, b, 1),
                        TaskPruning.Retrieval(setup.Student, setup.Teacher, setup.Data.Tokenizer.Special),
                        (d, g) => Evaluation.Retrieval(setup.Student, setup.Data.Captions("val"), setup.Data.Collate, d, gates: g).Mean),
                    _ => Runner(new CaptionStage(setup.Student, setup.Data, b, 1), TaskPruning.Captioning(setup.Student, setup.Teacher),
                        (d, g) => Evaluation.Captioning(setup.Student, setup.Data.Captions("val").Take(200).ToList(), setup.Data.Collate,
                            TaskData.CaptionPrompt, d, new EfficientVlm.Model.Tasks.BeamSettings(1, 20, 5), g).CiderD),
                };
                var result = await runner.RunAsync(setup.Masks, goal, parse.GetValue(warmup), parse.GetValue(maskLr), which,
                    new TrainerOptions { Epochs = parse.GetValue(epochs), LearningRate = parse.GetValue(lr), CheckpointEvery = 200 },
                    executor, dir, ct);
                var report = await executor.RunAsync(_ =>
                {
                    var keep = JsonSerializer.Deserialize<ModelKeep>(File.ReadAllText(Path.Combine(dir, "best-masks.json")))!;
                    using var best = Checkpoint.Load(Path.Combine(dir, "best"));
                    using var shrunk = Shrinker.Shrink(best, keep);
                    var hash = Checkpoint.Save(shrunk, Path.Combine(dir, "shrunk"));
                    return (Params: ParameterCounts.Count(shrunk), Before: ParameterCounts.Count(best), Hash: hash, Size: setup.Masks.Report(deterministic: true));
                });
                var table = new Table().AddColumns("modality", "heads kept", "FFN neurons kept");
                foreach (var m in report.Size.KeptHeads.Keys.Union(report.Size.KeptNeurons.Keys))
                    table.AddRow(m, $"{100 * report.Size.KeptHeads.GetValueOrDefault(m, 1):0.0}%", $"{100 * report.Size.KeptNeurons.GetValueOrDefault(m, 1):0.0}%");
                AnsiConsole.Write(table);
                var summary = $"pruned {which}: sparsity of the pool {100 * report.Size.ExpectedSparsity:0.0}% (target {100 * goal:0}%), " +
                    $"parameters {report.Before:N0} -> {report.Params:N0}; best validation {result.BestValidation:0.0000} at step {result.BestStep}; " +
                    $"shrunk model {dir}/shrunk ({report.Hash[..12]})";
                AnsiConsole.WriteLine(summary);
                File.WriteAllText(Path.Combine(dir, "prune-result.json"), JsonSerializer.Serialize(new
                {
                    task = which.ToString(), target = goal, sparsity = report.Size.ExpectedSparsity, report.Size.KeptHeads, report.Size.KeptNeurons,
                    parameters_before = report.Before, parameters_after = report.Params, result.BestValidation, result.BestStep,
                    seconds = result.Elapsed.TotalSeconds, hash = report.Hash,
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

    internal interface ITrainingStageRunner
    {
        Task<TrainingResult> RunAsync(PruningMasks masks, double target, double warmupEpochs, double maskLr, VlmTask task, TrainerOptions options,
            DeviceExecutor executor, string dir, CancellationToken ct);
    }

    private static ITrainingStageRunner Runner<T>(StageBase<T> stage, Func<T, torch.Device, ModelGates, (torch.Tensor, torch.Tensor)> losses,
        Func<torch.Device, ModelGates, double> validate) => new PruneRunner<T>(stage, losses, validate);

    private sealed class PruneRunner<T>(StageBase<T> stage, Func<T, torch.Device, ModelGates, (torch.Tensor, torch.Tensor)> losses,
        Func<torch.Device, ModelGates, double> validate) : ITrainingStageRunner
    {
        public async Task<TrainingResult> RunAsync(PruningMasks masks, double target, double warmupEpochs, double maskLr, VlmTask task,
            TrainerOptions options, DeviceExecutor executor, string dir, CancellationToken ct)
        {
            int warmup = (int)Math.Round(warmupEpochs * stage.BatchesPerEpoch);
            using var controller = await executor.RunAsync(_ => new SparsityController(masks, target, warmup, maskLr));
            var (tw, kw) = TaskPruning.Weights(task);
            var prune = new PruneStage<T>(stage, masks, controller, losses, validate, tw, kw, dir);
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
                        var kept = masks.Report();
                        var modalities = string.Join(" ", kept.KeptNeurons.Select(kv => $"{kv.Key} {100 * kv.Value:0}%"));
                        bar.Description = Markup.Escape($"prune {task} step {p.Step}/{p.TotalSteps} task {p.Parts["task"]:0.000} " +
                            $"sparsity {100 * p.Parts["sparsity"]:0.0}%/{100 * p.Parts["target"]:0.0}% FFN kept: {modalities}");
                        if (p.Validation is not null || p.Step % 25 == 0)
                            File.AppendAllText(Path.Combine(dir, "log.tsv"),
                                $"{p.Step}\t{p.Loss:0.0000}\t{string.Join(" ", p.Parts.Select(kv => $"{kv.Key} {kv.Value:0.0000}"))}\t{modalities}\t{p.Validation?.ToString("0.0000") ?? ""}\n");
                    });
                    result = await new Trainer<T>(prune, options, executor, dir).RunAsync(progress, ct);
                });
            return result;
        }
    }
}
