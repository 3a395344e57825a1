using System.CommandLine;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Training;
using EfficientVlm.Model.Modules;
using Spectre.Console;
using TorchSharp;

namespace EfficientVlm.Tool;

internal static class ModelCommand
{
    public static Command Create()
    {
        var presets = new Command("presets", "List the model presets with their parameter counts (built on the meta device).");
        presets.SetAction(_ =>
        {
            var table = new Table().AddColumns("preset", "D", "heads", "FFN", "vision/text/fusion/decoder", "image/patch",
                "backbone params", "all params (pretrain heads)");
            foreach (var (name, config) in Presets.All)
            {
                using var model = new VlmModel(config, torch.device("meta"));
                table.AddRow(name, $"{config.Hidden}", $"{config.Heads}", $"{config.Intermediate}",
                    $"{config.VisionLayers}/{config.TextLayers}/{config.FusionLayers}/{config.DecoderLayers}",
                    $"{config.ImageSize}/{config.PatchSize}", $"{ParameterCounts.Backbone(model):N0}", $"{ParameterCounts.Count(model):N0}");
            }
            AnsiConsole.Write(table);
        });
        var from = new Option<DirectoryInfo>("--model") { Description = "checkpoint folder (e.g. runs/teacher/vqa/best)", Required = true };
        var data = new Option<DirectoryInfo>("--data") { Description = "the data folder it was trained on (its vocab.txt and, for VQA, its train answers)", Required = true };
        var output = new Option<DirectoryInfo>("--out") { Description = "package folder to write (e.g. models/shapesworld/vqa)", Required = true };
        var package = new Command("package",
            "Write a checkpoint as a self-contained package: fp16 weights, config, its vocabulary, the VQA answer list, and a SHA-256 manifest checked on load.")
            { from, data, output };
        package.SetAction(parse =>
        {
            try
            {
                using var model = Checkpoint.Load(parse.GetValue(from)!.FullName);
                var dataDir = parse.GetValue(data)!.FullName;
                var source = ModelPackage.Vocabulary(parse.GetValue(from)!.FullName) ?? Path.Combine(dataDir, "vocab.txt");
                var answers = model.Config.Task == VlmTask.Vqa
                    ? ModelPackage.Answers(parse.GetValue(from)!.FullName) ?? new TaskData(dataDir, model.Config).AnswerList
                    : null;
                var files = ModelPackage.Write(model, parse.GetValue(output)!.FullName, source, answers);
                var table = new Table().AddColumns("file", "bytes", "sha256");
                foreach (var (name, (bytes, sha)) in files) table.AddRow(name, $"{bytes:N0}", sha[..16] + "...");
                AnsiConsole.Write(table);
                return 0;
            }
            catch (Exception e) when (UserErrors.Is(e))
            {
                return UserErrors.Report(e);
            }
        });
        return new Command("model", "Model configurations and packages.") { presets, package };
    }
}
