using EfficientVlm.Model.Modules;
using TorchSharp.Modules;

namespace EfficientVlm.Model.Training;

/// <summary>AdamW groups: matrices decay, biases / LayerNorm / scalars do not; parameters named in <c>fresh</c> learn at twice the rate.</summary>
public static class ParameterGroups
{
    public static IEnumerable<(IEnumerable<Parameter> Parameters, double LrMultiplier, bool Decay)> For(VlmModel model, ISet<string>? fresh = null)
    {
        var all = model.named_parameters().ToList();
        foreach (var isFresh in new[] { false, true })
        foreach (var decay in new[] { true, false })
        {
            var group = all.Where(p => (fresh?.Contains(p.name) ?? false) == isFresh && (p.parameter.dim() >= 2) == decay)
                .Select(p => p.parameter).ToList();
            if (group.Count > 0) yield return (group, isFresh ? 2.0 : 1.0, decay);
        }
    }
}
