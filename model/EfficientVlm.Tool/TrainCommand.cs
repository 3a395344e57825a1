using System.CommandLine;
using System.Text.Json;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Data.ShapesWorld;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Objectives;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Training;
using Spectre.Console;
using TorchSharp;

namespace EfficientVlm.Tool;

/// <summary><c>vlm train pretrain | distill | finetune</c>: every stage through the one trainer, with a progress bar and resume.</summary>
internal static class TrainCommand
{
    private static readonly Option<DirectoryInfo> DataOption = new("--data") { Description = "data folder written by `vlm data generate`", Required = true };
    private static readonly Option<DirectoryInfo> OutOption = new("--out") { Description = "run folder (rerun the same command to resume from its last checkpoint)", Required = true };
    private static readonly Option<int> EpochsOption = new("--epochs") { DefaultValueFactory = _ => 1 };
    private static readonly Option<int> BatchOption = new("--batch") { DefaultValueFactory = _ => 32 };
    private static readonly Option<double> LrOption = new("--lr") { Description = "peak learning rate", DefaultValueFactory = _ => 1e-4 };
    private static readonly Option<int> SeedOption = new("--seed") { DefaultValueFactory = _ => 1 };
    private static readonly Option<int?> TrainLimitOption = new("--train-limit") { Description = "use only the first N training records (short runs)" };
    private static readonly Option<int?> EvalLimitOption = new("--eval-limit") { Description = "use only the first N validation records" };
    private static readonly Option<int> CheckpointOption = new("--checkpoint-every") { DefaultValueFactory = _ => 200 };
    private static readonly Option<int> EvaluateOption = new("--evaluate-every") { Description = "validate every N steps as well as at epoch ends (0: epoch ends only)", DefaultValueFactory = _ => 0 };
    private static readonly Option<string> DecayOption = new("--decay") { Description = "learning-rate decay after warm-up: linear | cosine", DefaultValueFactory = _ => "linear" };
    private static readonly Option<double> WarmupOption = new("--warmup") { Description = "warm-up as a share of all steps", DefaultValueFactory = _ => 0.1 };

    private static void AddCommon(Command c)
    {
        foreach (var o in new Option[] { DataOption, OutOption, EpochsOption, BatchOption, LrOption, SeedOption, Torch.Threads, TrainLimitOption, EvalLimitOption, CheckpointOption,
                     EvaluateOption, DecayOption, WarmupOption })
            c.Options.Add(o);
    }

    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "model preset", DefaultValueFactory = _ => "demo-teacher" };
        var hardShare = ShareOption("--itm-hard-share",
            "share of ITM negatives drawn by similarity (1: the method, all hard; below 1 mixes uniform ones in, docs/training.md)");
        var positionInit = new Option<double?>("--position-init")
        {
            Description = "standard deviation of the vision encoder's positional embedding at the start (default: the preset's, CLIP's D^-0.5; docs/training.md, \"Position\")",
        };
        var pretrainInit = new Option<DirectoryInfo?>("--init")
        {
            Description = "continue from this checkpoint (any task but NLVR2; its task heads are dropped) instead of a new model of --preset",
        };
        var pretrain = new Command("pretrain", "Teacher vision-language pre-training: ITC + ITM (hard negatives) + MLM.") { preset, hardShare, positionInit, pretrainInit };
        AddCommon(pretrain);
        pretrain.SetAction((parse, ct) => Run(parse, ct, "pretrain", (data, seed, batch) =>
        {
            torch.manual_seed(seed);
            if (parse.GetValue(pretrainInit) is { } from)
            {
                using var start = Checkpoint.Load(from.FullName);
                var converted = TaskConversion.ToTask(start, VlmTask.Pretrain);
                return (converted, () => new PretrainStage(converted, data(converted.Config, from.FullName), batch, seed, parse.GetValue(hardShare)).Train(),
                    converted.Config);
            }
            var config = Presets.Get(parse.GetValue(preset)!);
            if (parse.GetValue(positionInit) is double std) config = (config with { PositionInit = std }).Validated();
            var model = Scopes.Keep(new VlmModel(config));
            return (model, () => new PretrainStage(model, data(config, null), batch, seed, parse.GetValue(hardShare)).Train(), config);
        }));

        var teacherPath = new Option<DirectoryInfo>("--teacher") { Description = "teacher checkpoint folder (e.g. runs/teacher/best)", Required = true };
        var studentPreset = new Option<string>("--preset") { Description = "student preset (half the teacher's depth)", DefaultValueFactory = _ => "demo" };
        var distill = new Command("distill", "General distillation of the teacher into the compact student.") { teacherPath, studentPreset };
        AddCommon(distill);
        distill.SetAction((parse, ct) => Run(parse, ct, "distill", (data, seed, batch) =>
        {
            torch.manual_seed(seed);
            var teacher = Checkpoint.Load(parse.GetValue(teacherPath)!.FullName);
            var config = Presets.Get(parse.GetValue(studentPreset)!) with { VocabSize = teacher.Config.VocabSize };
            var student = StudentInit.FromTeacher(teacher, config);
            foreach (var p in teacher.parameters()) p.requires_grad = false;
            return (student, () => new DistillStage(teacher, student, data(config, parse.GetValue(teacherPath)!.FullName), batch, seed).Train(), config);
        }));

        var task = new Option<string>("--task") { Description = "vqa | nlvr2 | retrieval | captioning", Required = true };
        var init = new Option<DirectoryInfo>("--init") { Description = "pre-trained or distilled checkpoint folder", Required = true };
        var repeat = new Option<string[]>("--repeat")
        {
            Description = "NLVR2: each training pair of a ShapesWorld statement family that many times per epoch, as FAMILY=N " +
                $"({string.Join(" | ", Enum.GetNames<Statements.Family>().Select(n => n.ToLowerInvariant()))}; e.g. --repeat compare=3)",
            AllowMultipleArgumentsPerToken = true,
        };
        var edited = new Option<bool>("--edited-negatives")
        {
            Description = "retrieval: each caption edited within ShapesWorld's word classes (colours, shapes, sizes, places, relations, " +
                "numbers) is one more negative for ITC and ITM (docs/training.md)",
        };
        var sameText = new Option<bool>("--same-text-negatives")
        {
            Description = "retrieval: a caption of another image may be an ITM negative even when its text equals one of the image's own " +
                "(X-VLM's rule; by default such captions are left out of the draw)",
        };
        var finetune = new Command("finetune", "Fine-tune a pre-trained or distilled model for one task (no pruning).")
            { task, init, FreezeOption, repeat, edited, sameText, VisionCacheOption, VisionCacheDirOption };
        AddCommon(finetune);
        finetune.SetAction((parse, ct) => Run(parse, ct, $"finetune-{parse.GetValue(task)}", (data, seed, batch) =>
        {
            torch.manual_seed(seed);
            using var pretrained = Checkpoint.Load(parse.GetValue(init)!.FullName);
            var which = ParseTask(parse.GetValue(task)!);
            var repeats = ParseRepeats(parse.GetValue(repeat));
            if (repeats.Count > 0 && which != VlmTask.Nlvr2) throw new ArgumentException("--repeat is for --task nlvr2 only.");
            if ((parse.GetValue(edited) || parse.GetValue(sameText)) && which != VlmTask.Retrieval)
                throw new ArgumentException("--edited-negatives and --same-text-negatives are for --task retrieval only.");
            bool cached = VisionCache(parse, out var cacheFolder);
            if (cached && which == VlmTask.Vqa) throw new ArgumentException("--vision-cache is for --task nlvr2, retrieval and captioning (and nlvr-pretrain).");
            var model = TaskConversion.ToTask(pretrained, which, out var fresh);
            Freeze(parse, model);
            var taskData = data(model.Config, parse.GetValue(init)!.FullName);
            Func<ITrainer> CachedNlvr()
            {
                var cachedStage = new CachedNlvrStage(model, taskData, batch, seed, fresh, repeats, cacheFolder);
                return Cached(cachedStage, cachedStage.CachedImages);
            }
            Func<ITrainer> stage = which switch
            {
                VlmTask.Vqa => () => new VqaStage(model, taskData, batch, seed, fresh).Train(),
                VlmTask.Nlvr2 when cached => CachedNlvr(),
                VlmTask.Nlvr2 => () => new NlvrStage(model, taskData, batch, seed, fresh, repeats).Train(),
                VlmTask.Retrieval => CaptionPairs(new RetrievalStage(model, taskData, batch, seed,
                    parse.GetValue(edited) ? CaptionNegatives.ShapesWorld : null, parse.GetValue(sameText), cached, cacheFolder)),
                _ => CaptionPairs(new CaptionStage(model, taskData, batch, seed, cacheVision: cached, cacheFolder: cacheFolder)),
            };
            return (model, stage, model.Config);
        }));

        var taInit = new Option<DirectoryInfo>("--init") { Description = "pre-trained or distilled checkpoint folder", Required = true };
        var taHardShare = ShareOption("--hard-share",
            "share of the other images drawn by similarity (1: X-VLM, all hard; below 1 mixes uniform ones in)");
        var nlvrPretrain = new Command("nlvr-pretrain",
            "NLVR2 domain pre-training: text assignment (which of two images a caption describes, or neither) on the doubled fusion stack; " +
            "fine-tune NLVR2 from its best checkpoint.") { taInit, taHardShare, FreezeOption, VisionCacheOption, VisionCacheDirOption };
        AddCommon(nlvrPretrain);
        nlvrPretrain.SetAction((parse, ct) => Run(parse, ct, "nlvr-pretrain", (data, seed, batch) =>
        {
            torch.manual_seed(seed);
            using var pretrained = Checkpoint.Load(parse.GetValue(taInit)!.FullName);
            var model = TaskConversion.ToTask(pretrained, VlmTask.Nlvr2);
            Freeze(parse, model);
            bool cached = VisionCache(parse, out var cacheFolder);
            var stage = new TextAssignmentStage(model, data(model.Config, parse.GetValue(taInit)!.FullName), batch, seed, parse.GetValue(taHardShare),
                cached, cacheFolder);
            return (model, CaptionPairs(stage), model.Config);
        }));

        var teacherPreset = new Option<string>("--preset") { Description = "model preset", DefaultValueFactory = _ => "cpu-teacher" };
        var teacherInit = new Option<DirectoryInfo?>("--init") { Description = "start from this checkpoint (converted to VQA) instead of a random model" };
        var stem = new Option<string?>("--stem") { Description = "override the preset's vision stem: patch | conv" };
        var positions = new Option<string?>("--positions") { Description = "override the preset's vision positions: random | sincos" };
        var patchWeight = new Option<double>("--patch-weight") { Description = "weight of the per-patch object-category loss (0: off)", DefaultValueFactory = _ => 1.0 };
        var boxWeight = new Option<double>("--box-weight") { Description = "weight of the described-object box loss, L1 + GIoU (0: off)", DefaultValueFactory = _ => 1.0 };
        var attentionWeight = new Option<double>("--attention-weight")
            { Description = "weight of the attention grounding loss: the first fusion layer's cross-attention on the described object (0: off; off by default, docs/training.md)", DefaultValueFactory = _ => 0.0 };
        var mlmWeight = new Option<double>("--mlm-weight")
            { Description = "weight of MLM on one caption of each image, through the fusion (0: off)", DefaultValueFactory = _ => 0.0 };
        var teacher = new Command("teacher",
            "The CPU teacher's supervised stage: VQA with object grounding (per-patch categories and the box of a described object, " +
            "from annotations/instances_*.json) on one vision pass; per-question-type validation in <out>/val-by-type.tsv.")
            { teacherPreset, teacherInit, stem, positions, patchWeight, boxWeight, attentionWeight, mlmWeight, positionInit };
        AddCommon(teacher);
        teacher.SetAction((parse, ct) => Run(parse, ct, "teacher", (data, seed, batch) =>
        {
            torch.manual_seed(seed);
            VlmModel model;
            HashSet<string>? fresh = null;
            if (parse.GetValue(teacherInit) is { } from)
            {
                var start = Checkpoint.Load(from.FullName);
                if (start.Config.Task == VlmTask.Vqa) model = start;
                else
                {
                    using (start) model = TaskConversion.ToTask(start, VlmTask.Vqa, out fresh);
                }
            }
            else
            {
                var config = Presets.Get(parse.GetValue(teacherPreset)!);
                if (parse.GetValue(stem) is string s) config = config with { Stem = ParseEnum<VisionStem>(s, "--stem") };
                if (parse.GetValue(positions) is string p) config = config with { Positions = ParseEnum<VisionPositions>(p, "--positions") };
                if (parse.GetValue(positionInit) is double std) config = config with { PositionInit = std };
                model = Scopes.Keep(new VlmModel(config.Validated() with { Task = VlmTask.Vqa }));
            }
            var log = Path.Combine(parse.GetValue(OutOption)!.FullName, "val-by-type.tsv");
            var weights = new GroundingWeights(parse.GetValue(patchWeight), parse.GetValue(boxWeight), parse.GetValue(attentionWeight), parse.GetValue(mlmWeight));
            return (model, () => new GroundedVqaStage(model, data(model.Config, parse.GetValue(teacherInit)?.FullName), batch, seed, weights, fresh, scores =>
            {
                if (!File.Exists(log)) File.WriteAllText(log, "time\t" + string.Join("\t", scores.Select(s => s.Form)) + "\n");
                File.AppendAllText(log, $"{DateTime.UtcNow:O}\t" + string.Join("\t", scores.Select(s => s.Accuracy.ToString("0.0"))) + "\n");
            }).Train(), model.Config);
        }));

        return new Command("train", "Train: teacher pre-training, general distillation, NLVR2 domain pre-training, task fine-tuning, the CPU teacher.")
            { pretrain, distill, nlvrPretrain, finetune, teacher };
    }

    private static readonly Option<string[]> FreezeOption = new("--freeze")
    {
        Description = $"parts left as they are, not trained ({string.Join(" | ", ParameterGroups.Freezable.Keys)}; e.g. --freeze vision)",
        AllowMultipleArgumentsPerToken = true,
    };

    /// <summary>Applies <c>--freeze</c> to the model before its stage collects the parameter groups.</summary>
    private static void Freeze(ParseResult parse, VlmModel model)
    {
        if (parse.GetValue(FreezeOption) is { Length: > 0 } parts)
            AnsiConsole.MarkupLineInterpolated($"frozen: {string.Join(", ", parts)} ({ParameterGroups.Freeze(model, parts):N0} parameters)");
    }

    /// <summary><c>--repeat compare=3 ...</c> -> family -> count; a bad family or count is refused naming what is allowed.</summary>
    internal static IReadOnlyDictionary<Statements.Family, int> ParseRepeats(string[]? values)
    {
        var repeats = new Dictionary<Statements.Family, int>();
        foreach (var value in values ?? [])
        {
            var parts = value.Split('=');
            if (parts.Length != 2 || !int.TryParse(parts[1], out var n) || n is < 1 or > 100)
                throw new ArgumentException($"--repeat takes FAMILY=N with N from 1 to 100; got '{value}'.");
            repeats[ParseEnum<Statements.Family>(parts[0], "--repeat's family")] = n;
        }
        return repeats;
    }

    /// <summary>A share in [0, 1], 1 by default; anything else is refused with the option's name.</summary>
    private static Option<double> ShareOption(string name, string description)
    {
        var option = new Option<double>(name) { Description = description, DefaultValueFactory = _ => 1.0 };
        option.Validators.Add(r => { if (r.GetValueOrDefault<double>() is not (>= 0 and <= 1)) r.AddError($"{name} must be between 0 and 1."); });
        return option;
    }

    private static T ParseEnum<T>(string value, string option) where T : struct, Enum =>
        Enum.TryParse<T>(value, ignoreCase: true, out var parsed) && Enum.IsDefined(parsed)
            ? parsed
            : throw new ArgumentException($"{option} must be one of {string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))}; got '{value}'.");

    internal static VlmTask ParseTask(string name) => name.ToLowerInvariant() switch
    {
        "vqa" => VlmTask.Vqa,
        "nlvr2" or "nlvr" => VlmTask.Nlvr2,
        "retrieval" => VlmTask.Retrieval,
        "captioning" or "caption" => VlmTask.Captioning,
        _ => throw new ArgumentException($"Unknown task '{name}': vqa, nlvr2, retrieval or captioning."),
    };

    /// <summary>A stage bound to its batch type, so the command can run any of them.</summary>
    internal interface ITrainer
    {
        Task<TrainingResult> RunAsync(TrainerOptions options, DeviceExecutor executor, string dir, IProgress<TrainingProgress> progress, CancellationToken ct);
    }

    private sealed class Bound<T>(ITrainingStage<T> stage) : ITrainer
    {
        public Task<TrainingResult> RunAsync(TrainerOptions options, DeviceExecutor executor, string dir, IProgress<TrainingProgress> progress, CancellationToken ct) =>
            new Trainer<T>(stage, options, executor, dir).RunAsync(progress, ct);
    }

    private static ITrainer Train<T>(this ITrainingStage<T> stage) => new Bound<T>(stage);

    private static readonly Option<bool> VisionCacheOption = new("--vision-cache")
    {
        Description = "with --freeze vision (finetune --task nlvr2 | retrieval | captioning, nlvr-pretrain): encode every train image once and read its vision tokens " +
            "from memory instead of decoding and encoding the images at every step (same results, faster; docs/training.md)",
    };

    private static readonly Option<DirectoryInfo?> VisionCacheDirOption = new("--vision-cache-dir")
    {
        Description = "with --vision-cache: also keep the tokens in this folder, named by a hash of the frozen encoder and the images, " +
            "so a later stage with the same encoder reads them instead of encoding again",
    };

    /// <summary>Whether <c>--vision-cache</c> is on, and its folder.</summary>
    private static bool VisionCache(ParseResult parse, out string? folder)
    {
        folder = parse.GetValue(VisionCacheDirOption)?.FullName;
        bool on = parse.GetValue(VisionCacheOption);
        if (folder is not null && !on) throw new ArgumentException("--vision-cache-dir needs --vision-cache.");
        return on;
    }

    /// <summary>A caption-pair stage, saying so when it reads cached vision tokens.</summary>
    private static Func<ITrainer> CaptionPairs<T>(CaptionPairStage<T> stage) => stage.CachedImages > 0 ? Cached(stage, stage.CachedImages) : () => stage.Train();

    /// <summary>A stage that reads cached vision tokens, made (and its cache checked) before training starts.</summary>
    private static Func<ITrainer> Cached<T>(ITrainingStage<T> stage, int images)
    {
        AnsiConsole.MarkupLineInterpolated($"vision tokens of {images:N0} train images: encoded once (or read from the cache folder), at the first step");
        return () => stage.Train();
    }

    private static async Task<int> Run(ParseResult parse, CancellationToken ct, string name,
        Func<Func<VlmConfig, string?, TaskData>, int, int, (VlmModel Model, Func<ITrainer> Stage, VlmConfig Config)> build)
    {
        var dir = parse.GetValue(OutOption)!.FullName;
        int seed = parse.GetValue(SeedOption), batch = parse.GetValue(BatchOption);
        var options = new TrainerOptions
        {
            Epochs = parse.GetValue(EpochsOption),
            LearningRate = parse.GetValue(LrOption),
            Seed = seed,
            CheckpointEvery = parse.GetValue(CheckpointOption),
            EvaluateEvery = parse.GetValue(EvaluateOption),
            Decay = ParseEnum<LrDecay>(parse.GetValue(DecayOption)!, "--decay"),
            WarmupFraction = parse.GetValue(WarmupOption),
        };
        using var executor = Torch.Executor(parse);
        try
        {
            // the data as the model that training starts from reads it: its own vocabulary and answers when it carries them
            TaskData? data = null;
            var (model, stageFactory, config) = await executor.RunAsync(_ =>
            {
                TaskData DataFor(VlmConfig config, string? startFrom) => data =
                    new(parse.GetValue(DataOption)!.FullName, config, parse.GetValue(TrainLimitOption), parse.GetValue(EvalLimitOption), model: startFrom);
                return build(DataFor, seed, batch);
            });
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "run.json"), JsonSerializer.Serialize(new
            {
                stage = name, args = Environment.GetCommandLineArgs().Skip(1), options, model = config.Name,
                parameters = ParameterCounts.Count(model), started = DateTime.UtcNow,
            }, new JsonSerializerOptions { WriteIndented = true }));
            var trainer = stageFactory();
            TrainingResult result = null!;
            await AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                    new ElapsedTimeColumn(), new RemainingTimeColumn())
                .StartAsync(async ctx =>
                {
                    var bar = ctx.AddTask(name, maxValue: 1);
                    double? lastValidation = null;
                    var progress = new CallbackProgress<TrainingProgress>(p =>
                    {
                        bar.MaxValue = p.TotalSteps;
                        bar.Value = p.Step;
                        lastValidation = p.Validation ?? lastValidation;
                        var parts = string.Join(" ", p.Parts.Select(kv => $"{kv.Key} {kv.Value:0.000}"));
                        bar.Description = Markup.Escape($"{name} ep {p.Epoch + 1} step {p.Step}/{p.TotalSteps} loss {p.Loss:0.000} ({parts}) " +
                            $"{p.StepsPerSecond:0.00} it/s lr {p.LearningRate:0.0e0}{(lastValidation is double v ? $" val {v:0.000}" : "")}");
                        if (p.Validation is double val || p.Step % 50 == 0)
                            File.AppendAllText(Path.Combine(dir, "log.tsv"),
                                $"{p.Step}\t{p.Loss:0.00000}\t{parts}\t{p.Validation?.ToString("0.00000") ?? ""}\t{p.Elapsed.TotalSeconds:0}\t" +
                                string.Join(" ", (p.Seconds ?? new Dictionary<string, double>()).Select(kv => $"{kv.Key} {kv.Value:0.0}")) + "\n");
                    });
                    result = await trainer.RunAsync(options, executor, dir, progress, ct);
                });
            // the best checkpoint carries the words it was trained with, so `vlm eval` reads its ids on any data folder
            if (data is not null && Directory.Exists(result.BestCheckpoint))
                data.WriteWords(result.BestCheckpoint, config.Task);
            AnsiConsole.MarkupLineInterpolated($"{name}: {result.Steps} steps in {result.Elapsed.TotalMinutes:0.0} min; best validation {result.BestValidation:0.0000} at step {result.BestStep} -> [green]{result.BestCheckpoint}[/]");
            File.WriteAllText(Path.Combine(dir, "result.json"), JsonSerializer.Serialize(new
            {
                result.Steps, result.BestValidation, result.BestStep, ElapsedSeconds = result.Elapsed.TotalSeconds,
                FinalLoss = result.Losses.Count > 0 ? result.Losses[^1] : double.NaN,
            }, new JsonSerializerOptions { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
            return 0;
        }
        catch (Exception e) when (UserErrors.Is(e))
        {
            return UserErrors.Report(e);
        }
    }
}
