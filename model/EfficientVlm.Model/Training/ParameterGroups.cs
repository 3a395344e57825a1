using EfficientVlm.Model.Modules;
using TorchSharp.Modules;

namespace EfficientVlm.Model.Training;

/// <summary>
/// AdamW groups: matrices decay, biases / LayerNorm / scalars do not; parameters named in <c>fresh</c> learn at twice the rate;
/// frozen parameters (<see cref="Freeze"/>) are left out.
/// </summary>
public static class ParameterGroups
{
    /// <summary>The parts <see cref="Freeze"/> knows, by the parameter-name prefixes each covers.</summary>
    public static readonly IReadOnlyDictionary<string, string[]> Freezable = new Dictionary<string, string[]>
    {
        ["vision"] = ["vision."],
        ["text"] = ["embeddings.", "text."],
    };

    /// <summary>
    /// Stops training the named parts (<see cref="Freezable"/>): their parameters no longer require grad, so autograd
    /// records nothing through them and the optimiser does not hold them. Returns how many parameters were frozen.
    /// </summary>
    public static long Freeze(VlmModel model, IEnumerable<string> parts)
    {
        var prefixes = parts.SelectMany(list => list.Split(',', StringSplitOptions.RemoveEmptyEntries))
            .SelectMany(part => Freezable.TryGetValue(part.Trim().ToLowerInvariant(), out var covered)
                ? covered
                : throw new ArgumentException($"Cannot freeze '{part}': choose from {string.Join(", ", Freezable.Keys)}."))
            .ToList();
        long frozen = 0;
        foreach (var (name, parameter) in model.named_parameters())
        {
            if (!prefixes.Any(name.StartsWith)) continue;
            parameter.requires_grad = false;
            frozen += parameter.numel();
        }
        return frozen;
    }

    public static IEnumerable<(IEnumerable<Parameter> Parameters, double LrMultiplier, bool Decay)> For(VlmModel model, ISet<string>? fresh = null)
    {
        var all = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        foreach (var isFresh in new[] { false, true })
        foreach (var decay in new[] { true, false })
        {
            var group = all.Where(p => (fresh?.Contains(p.name) ?? false) == isFresh && (p.parameter.dim() >= 2) == decay)
                .Select(p => p.parameter).ToList();
            if (group.Count > 0) yield return (group, isFresh ? 2.0 : 1.0, decay);
        }
    }
}
