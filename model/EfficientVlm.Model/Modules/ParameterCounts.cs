using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Modules;

/// <summary>Parameter counts by state-dict key prefix.</summary>
public static class ParameterCounts
{
    /// <summary>The backbone as the paper counts it: vision encoder + text embeddings + text and fusion layers (no heads, no decoder).</summary>
    public static readonly string[] BackbonePrefixes = ["vision.", "embeddings.", "text.", "fusion."];

    public static long Count(Module module, params string[] prefixes) =>
        module.named_parameters()
            .Where(p => prefixes.Length == 0 || prefixes.Any(prefix => p.name.StartsWith(prefix, StringComparison.Ordinal)))
            .Sum(p => p.parameter.numel());

    public static long Backbone(Module module) => Count(module, BackbonePrefixes);
}
