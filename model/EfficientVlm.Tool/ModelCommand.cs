using System.CommandLine;
using EfficientVlm.Model.Config;
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
        return new Command("model", "Model configurations.") { presets };
    }
}
