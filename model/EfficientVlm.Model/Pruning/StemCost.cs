using EfficientVlm.Model.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Pruning;

/// <summary>
/// Multiply-adds of the conv stem per image, from its widths: conv i (3x3) costs 9 · S_i² · C_{i-1} · C_i, with S_i the side
/// of its output (the image side, halved by every conv after the first), C_{-1} = 3 and the last width the hidden size.
/// Bias adds and GELUs are left out. The stem's channels are pruned against this cost, not against their parameters: a
/// channel of the first conv holds the fewest parameters and costs the most time (docs/stem-pruning-plan.md).
/// </summary>
public static class StemCost
{
    /// <summary>Multiply-adds per image of a stem with inner widths <paramref name="inner"/> (the config's when null).</summary>
    public static double Macs(VlmConfig config, IReadOnlyList<double>? inner = null)
    {
        var widths = Widths(config, inner ?? config.StemWidths.Select(w => (double)w).ToList());
        return Coefficients(config).Select((c, i) => c * widths[i] * widths[i + 1]).Sum();
    }

    /// <summary>9 · S_i² of each conv.</summary>
    private static double[] Coefficients(VlmConfig config)
    {
        int convs = VlmConfig.DefaultStemWidths(config.Hidden, config.PatchSize).Count + 1;
        return Enumerable.Range(0, convs).Select(i => 9.0 * Math.Pow(config.ImageSize >> i, 2)).ToArray();
    }

    private static double[] Widths(VlmConfig config, IReadOnlyList<double> inner) => [3, .. inner, config.Hidden];

    /// <summary>
    /// 1 - E[multiply-adds] / those of the whole (unpruned) stem, differentiable in the expected inner widths
    /// <paramref name="expectedWidths"/> (one scalar tensor each, Σ P(keep) of a row). Exact for independent gates:
    /// E[C_{i-1} C_i] = E[C_{i-1}] E[C_i] across rows.
    /// </summary>
    public static Tensor ExpectedSparsity(VlmConfig config, IReadOnlyList<Tensor> expectedWidths)
    {
        var full = VlmConfig.DefaultStemWidths(config.Hidden, config.PatchSize);
        if (expectedWidths.Count != full.Count) throw new ArgumentException($"The stem has {full.Count} inner convolutions; got {expectedWidths.Count} widths.");
        double total = Macs(config, full.Select(w => (double)w).ToList());
        var device = expectedWidths[0].device;
        // [3, E_0, .., E_{K-2}, D] as one vector, then Σ c_i E_{i-1} E_i / total; the constants are tensors made from floats,
        // no temporary Scalar in this per-step call (docs/platform.md)
        var widths = torch.cat([torch.tensor(new[] { 3f }, device: device), .. expectedWidths.Select(e => e.reshape(1)),
            torch.tensor(new[] { (float)config.Hidden }, device: device)]);
        var share = torch.tensor(Coefficients(config).Select(c => (float)(c / total)).ToArray(), device: device);
        long k = widths.shape[0];
        var products = widths.narrow(0, 0, k - 1).mul(widths.narrow(0, 1, k - 1));
        return products.mul(share).sum().neg().add(torch.ones(Array.Empty<long>(), device: device), Runtime.Scalars.One);
    }
}
