using EfficientVlm.Model.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Modules;

/// <summary>Builds a task model from a pre-trained (or distilled) one, copying every weight that carries over.</summary>
public static class TaskConversion
{
    /// <summary>
    /// VQA: the answer decoder's layer j starts as fusion layer j (method.md: initialised from the fusion
    /// layers), unless the model is a VQA model already, whose decoder is kept. NLVR2: fusion layer j is copied into doubled layers 2j and 2j+1 (their shared
    /// cross-attention key/value come from it once). New heads keep their fresh initialisation.
    /// A model already converted to NLVR2 (domain pre-trained by text assignment) converts to NLVR2 as
    /// it is, except its NLVR2 head, which text assignment never trains: that starts fresh.
    /// </summary>
    public static VlmModel ToTask(VlmModel pretrained, VlmTask task) => ToTask(pretrained, task, out _);

    /// <param name="fresh">State-dict names that did not come from the pre-trained model (new heads).</param>
    public static VlmModel ToTask(VlmModel pretrained, VlmTask task, out HashSet<string> fresh)
    {
        if (pretrained.Config.Pruned is not null)
            throw new ArgumentException("Convert the unpruned model; pruning happens on the task model.");
        if (pretrained.Config.Task == VlmTask.Nlvr2 && task != VlmTask.Nlvr2)
            throw new ArgumentException("An NLVR2 model only converts to NLVR2; convert the pre-trained model instead.");
        var config = pretrained.Config with { Task = task };
        var device = pretrained.parameters().First().device;
        var model = Runtime.Scopes.Keep(new VlmModel(config, device));
        var source = pretrained.state_dict();
        var target = model.state_dict();
        fresh = [];
        using (torch.no_grad())
        {
            foreach (var (name, tensor) in target)
            {
                var from = SourceKey(name, config, pretrained.Config);
                if (from is not null && source.TryGetValue(from, out var value) && value.shape.SequenceEqual(tensor.shape))
                    tensor.copy_(value);
                else
                    fresh.Add(name);
            }
        }
        return model;
    }

    private static string? SourceKey(string name, VlmConfig config, VlmConfig source)
    {
        if (source.Task == VlmTask.Nlvr2) return name.StartsWith("nlvr_", StringComparison.Ordinal) ? null : name;
        const string decoder = "decoder.layers.", fusion = "fusion.layers.";
        // a VQA model converted to VQA (fine-tuned further) keeps its own trained decoder
        if (config.Task == VlmTask.Vqa && source.Task != VlmTask.Vqa && name.StartsWith(decoder, StringComparison.Ordinal))
        {
            var rest = name[decoder.Length..];
            int dot = rest.IndexOf('.');
            int layer = int.Parse(rest[..dot]);
            return layer < config.FusionLayers ? $"{fusion}{layer}{rest[dot..]}" : null;
        }
        if (config.Task == VlmTask.Nlvr2 && name.StartsWith(fusion, StringComparison.Ordinal))
        {
            var rest = name[fusion.Length..];
            int dot = rest.IndexOf('.');
            return $"{fusion}{int.Parse(rest[..dot]) / 2}{rest[dot..]}";
        }
        return name;
    }
}
