namespace EfficientVlm.Model.Data.ShapesWorld;

/// <summary>
/// Independent, reproducible random streams: every (seed, stream, index) gets its own
/// <see cref="Random"/>, so items can be generated in parallel and in any order with the same result.
/// </summary>
public static class Seeds
{
    public static Random For(int seed, string stream, long index)
    {
        ulong h = SplitMix((ulong)(uint)seed);
        foreach (var ch in stream) h = SplitMix(h ^ ch);
        h = SplitMix(h ^ (ulong)index);
        return new Random((int)(h & 0x7FFFFFFF));
    }

    private static ulong SplitMix(ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }
}
