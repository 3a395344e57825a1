namespace EfficientVlm.Model.Data.Pipeline;

/// <summary>Epoch orders and batches over a list of records, reproducible from a seed.</summary>
public static class Batching
{
    /// <summary>The records of epoch <paramref name="epoch"/> in a shuffled order (same seed and epoch, same order).</summary>
    public static IReadOnlyList<T> Shuffle<T>(IReadOnlyList<T> items, int seed, int epoch)
    {
        var rng = ShapesWorld.Seeds.For(seed, "epoch", epoch);
        var order = Enumerable.Range(0, items.Count).ToArray();
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order.Select(i => items[i]).ToList();
    }

    /// <summary>Consecutive batches of at most <paramref name="size"/> (the last may be smaller unless dropped).</summary>
    public static IEnumerable<IReadOnlyList<T>> Batches<T>(IReadOnlyList<T> items, int size, bool dropLast = false)
    {
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), "Batch size must be at least 1.");
        for (int start = 0; start < items.Count; start += size)
        {
            int n = Math.Min(size, items.Count - start);
            if (n < size && dropLast) yield break;
            yield return Enumerable.Range(start, n).Select(i => items[i]).ToList();
        }
    }

    /// <summary>Batches of an epoch, collated on a background thread <paramref name="prefetch"/> batches ahead.</summary>
    public static Prefetcher<TBatch> Prefetch<T, TBatch>(IReadOnlyList<T> items, int batchSize, int seed, int epoch,
        Func<IReadOnlyList<T>, TBatch> collate, bool shuffle = true, int prefetch = 4) =>
        new(ct => Batches(shuffle ? Shuffle(items, seed, epoch) : items, batchSize)
            .Select(batch =>
            {
                ct.ThrowIfCancellationRequested();
                return collate(batch);
            }), prefetch);
}
