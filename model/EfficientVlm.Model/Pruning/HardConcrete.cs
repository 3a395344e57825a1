using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Pruning;

/// <summary>
/// Hard-concrete gates (L0 regularisation, method.md section 4): stretch interval (l, r) = (-0.1, 1.1),
/// temperature beta = 2/3. A gate's log_alpha decides how likely it is to stay open.
/// </summary>
public static class HardConcrete
{
    public const double Left = -0.1;
    public const double Right = 1.1;
    public const double Beta = 2.0 / 3.0;
    public const double Epsilon = 1e-6;

    /// <summary>Bounds log_alpha is clamped to after every step: [ln 0.01, ln 100].</summary>
    public static readonly double MinLogAlpha = Math.Log(0.01), MaxLogAlpha = Math.Log(100);

    /// <summary>
    /// One sample of the gates (shared by the whole batch): u ~ U(eps, 1 - eps),
    /// s = sigmoid((log u - log(1 - u) + log_alpha) / beta), z = clamp(s (r - l) + l, 0, 1).
    /// </summary>
    public static Tensor Sample(Tensor logAlpha)
    {
        var u = torch.rand_like(logAlpha).mul(UniformSpan).add(EpsilonScalar, One);
        var s = torch.sigmoid(u.log().sub(u.neg().add(One, One).log()).add(logAlpha, One).div(BetaScalar));
        return s.mul(Stretch).add(LeftScalar, One).clamp(Zero, One);
    }

    /// <summary>P(z != 0) = sigmoid(log_alpha - beta log(-l / r)).</summary>
    public static Tensor KeepProbability(Tensor logAlpha) => torch.sigmoid(logAlpha.sub(KeepShift));

    // Scalars held for the life of the process, and every add given its alpha: TorchSharp passes a Scalar's
    // handle to libtorch without keeping the Scalar alive, and a temporary one (an implicit conversion, or the
    // alpha of add(Scalar)) can be finalised during the call ("Unknown scalar type" / Scalar.h; docs/platform.md).
    // Gates are sampled at every pruning step, where that crash was seen.
    private static readonly Scalar Zero = 0.0, One = 1.0, EpsilonScalar = Epsilon, UniformSpan = 1 - 2 * Epsilon, BetaScalar = Beta,
        Stretch = Right - Left, LeftScalar = Left, KeepShift = Beta * Math.Log(-Left / Right);

    /// <summary>
    /// Deterministic binary mask of one row (one layer's heads or neurons): <paramref name="zeroCount"/> zeros, by default
    /// the row's expected number, round(size - sum P(z != 0)) (the method; <see cref="PruningMasks"/> passes counts
    /// rounded over all rows together), go to the gates with the smallest score sigmoid(log_alpha / beta * 0.8); the
    /// rest are 1. Ties break by lower index first.
    /// </summary>
    public static float[] DeterministicRow(float[] logAlpha, int? zeroCount = null)
    {
        int size = logAlpha.Length;
        int zeros = zeroCount ?? (int)Math.Round(size - logAlpha.Sum(a => 1.0 / (1.0 + Math.Exp(-(a - Beta * Math.Log(-Left / Right))))), MidpointRounding.ToEven);
        var mask = Enumerable.Repeat(1f, size).ToArray();
        if (zeros <= 0) return mask;
        var order = Enumerable.Range(0, size).OrderBy(i => 1.0 / (1.0 + Math.Exp(-logAlpha[i] / Beta * 0.8))).ThenBy(i => i);
        foreach (var i in order.Take(Math.Min(zeros, size))) mask[i] = 0f;
        return mask;
    }
}
