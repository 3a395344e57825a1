namespace EfficientVlm.Common;

/// <summary>
/// The one definition of percentiles and medians used by every report (benchmarks, the load
/// generator, the fleet harness, the pipeline's speed-ups). Compiled into each project that needs it
/// (linked source, see common/README.md), so the projects share the code without sharing a dependency.
/// </summary>
internal static class Quantiles
{
    /// <summary>
    /// Nearest-rank percentile of values sorted ascending: the smallest value with at least
    /// <paramref name="q"/> of the values at or below it (q in [0, 1]); NaN when there are none.
    /// </summary>
    public static double NearestRank(IReadOnlyList<double> sorted, double q)
    {
        if (q is < 0 or > 1 || double.IsNaN(q)) throw new ArgumentOutOfRangeException(nameof(q), q, "A quantile is between 0 and 1.");
        return sorted.Count == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Count) - 1, 0, sorted.Count - 1)];
    }

    /// <summary>Median of the finite values in any order (the mean of the middle two for an even count); NaN when there are none.</summary>
    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Where(double.IsFinite).Order().ToList();
        int n = sorted.Count;
        return n == 0 ? double.NaN : n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}
