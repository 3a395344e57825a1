using System.Diagnostics;
using EfficientVlm.Artifacts;
using EfficientVlm.Grains.Jobs;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Serving;
using Microsoft.Extensions.Logging;

namespace EfficientVlm.Grains.Serving;

/// <summary>Settings of serving; configuration section <c>Fleet:Serving</c>.</summary>
public sealed record ServingOptions
{
    public const string SectionName = "Fleet:Serving";

    /// <summary>Most requests one replica runs in one executor call.</summary>
    public int MaxBatchSize { get; init; } = 32;

    /// <summary>Longest a request waits for others to join its batch.</summary>
    public TimeSpan MaxQueueDelay { get; init; } = TimeSpan.FromMilliseconds(5);

    /// <summary>Calls a replica holds queued; beyond it calls are refused as busy (retry).</summary>
    public int MaxQueueLength { get; init; } = 1024;

    /// <summary>Replicas a ready variant starts with, and the least it keeps.</summary>
    public int Replicas { get; init; } = 1;

    /// <summary>Most replicas a variant grows to.</summary>
    public int MaxReplicas { get; init; } = 4;

    /// <summary>
    /// Most replicas of one variant on one silo. Replicas on one silo share its device executor, so a
    /// second one there splits the batches instead of adding throughput: by default a variant grows only
    /// onto silos that do not serve it yet (a GPU silo that joins gets the next replica).
    /// </summary>
    public int MaxReplicasPerSilo { get; init; } = 1;

    /// <summary>How often a ready variant looks at its replicas' queue delay to grow or shrink.</summary>
    public TimeSpan ScaleInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Mean queue delay over an interval above which a variant adds a replica.</summary>
    public TimeSpan ScaleUpQueueDelay { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Mean queue delay below which (or no calls at all) a variant removes a replica.</summary>
    public TimeSpan ScaleDownQueueDelay { get; init; } = TimeSpan.FromMilliseconds(5);

    /// <summary>Bytes of weights a silo keeps loaded; the least recently used model not in use is evicted beyond it.</summary>
    public long CacheBudgetBytes { get; init; } = 2L << 30;

    public ServingLimits Limits { get; init; } = new();

    public void Validate()
    {
        if (MaxBatchSize is < 1 or > 1024) throw new ArgumentException("Fleet:Serving:MaxBatchSize must be 1..1024.");
        if (MaxQueueDelay < TimeSpan.Zero || MaxQueueDelay > TimeSpan.FromSeconds(1)) throw new ArgumentException("Fleet:Serving:MaxQueueDelay must be 0..1 s.");
        if (MaxQueueLength < MaxBatchSize) throw new ArgumentException("Fleet:Serving:MaxQueueLength must be at least MaxBatchSize.");
        if (Replicas is < 1 or > 64) throw new ArgumentException("Fleet:Serving:Replicas must be 1..64.");
        if (MaxReplicas < Replicas || MaxReplicas > 64) throw new ArgumentException("Fleet:Serving:MaxReplicas must be Replicas..64.");
        if (MaxReplicasPerSilo is < 1 or > 64) throw new ArgumentException("Fleet:Serving:MaxReplicasPerSilo must be 1..64.");
        if (ScaleInterval < TimeSpan.FromMilliseconds(100)) throw new ArgumentException("Fleet:Serving:ScaleInterval must be at least 0.1 s.");
        if (ScaleDownQueueDelay > ScaleUpQueueDelay) throw new ArgumentException("Fleet:Serving:ScaleDownQueueDelay must not exceed ScaleUpQueueDelay.");
        if (CacheBudgetBytes < 1) throw new ArgumentException("Fleet:Serving:CacheBudgetBytes must be positive.");
    }
}

/// <summary>What the cache holds now (for tests, metrics and operators).</summary>
public sealed record ModelCacheStats(IReadOnlyList<string> Loaded, long Bytes, long Loads, long Evictions, double LastLoadMilliseconds);

/// <summary>
/// The silo's loaded serving models, shared by its replicas: a model is downloaded (once per silo, to
/// the work folder's cache) and loaded on the device executor the first time a replica needs it, and
/// kept while the total stays within <see cref="ServingOptions.CacheBudgetBytes"/>; beyond it the
/// least recently used model that no batch is using is disposed. A model in use is never evicted, so
/// the budget can be exceeded while every model is busy.
/// </summary>
public sealed class ModelCache(DeviceExecutor executor, BlobArtifactStore store, DiskArtifactCache disk, ServingOptions options,
    ILogger<ModelCache> logger)
{
    private sealed class Entry
    {
        public required Task<ServingModel> Loading { get; init; }
        public long Bytes { get; set; }
        public long LastUsed { get; set; }
        public int Leases { get; set; }
    }

    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private long _clock, _loads, _evictions;
    private double _lastLoadMs;

    /// <summary>A model held for one batch; dispose it when the batch is done.</summary>
    public sealed class Lease(ModelCache cache, string hash, ServingModel model) : IDisposable
    {
        private int _released;
        public ServingModel Model => model;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) cache.Release(hash);
        }
    }

    public async Task<Lease> AcquireAsync(string hash, CancellationToken ct = default)
    {
        Entry entry;
        lock (_entries)
        {
            if (!_entries.TryGetValue(hash, out entry!))
                _entries[hash] = entry = new Entry { Loading = LoadAsync(hash) }; // shared: not cancelled by one caller
            entry.Leases++;
            entry.LastUsed = ++_clock;
        }
        ServingModel model;
        try
        {
            model = await entry.Loading.WaitAsync(ct);
        }
        catch
        {
            lock (_entries)
            {
                entry.Leases--;
                if (_entries.TryGetValue(hash, out var current) && current == entry) _entries.Remove(hash);
            }
            throw;
        }
        var lease = new Lease(this, hash, model);
        try
        {
            await EvictAsync();
        }
        catch (Exception e)
        {
            logger.LogWarning(e, "Model cache: an eviction failed; the cache stays over budget until the next load");
        }
        return lease;
    }

    private void Release(string hash)
    {
        lock (_entries)
        {
            if (_entries.TryGetValue(hash, out var entry)) entry.Leases--;
        }
    }

    private async Task<ServingModel> LoadAsync(string hash)
    {
        var clock = Stopwatch.StartNew();
        ServingModel model;
        using (var folder = await disk.AcquireAsync(store, new ArtifactRef(JobArtifacts.Model, hash)))
            model = await executor.RunAsync(ctx => ServingModel.Load(folder.Path, ctx.Device));
        lock (_entries)
        {
            if (_entries.TryGetValue(hash, out var entry)) entry.Bytes = model.Bytes;
            _loads++;
            _lastLoadMs = clock.Elapsed.TotalMilliseconds;
            FleetMetrics.CacheBytes.Set(_entries.Values.Where(e => e.Loading.IsCompletedSuccessfully).Sum(e => e.Bytes) + model.Bytes);
        }
        FleetMetrics.ModelLoad.Observe(clock.Elapsed.TotalSeconds);
        logger.LogInformation("Loaded model {Model} ({Megabytes:0.0} MB) in {Milliseconds:0} ms", hash[..12], model.Bytes / 1e6, clock.Elapsed.TotalMilliseconds);
        return model;
    }

    private async Task EvictAsync()
    {
        var victims = new List<(string Hash, Task<ServingModel> Model)>();
        lock (_entries)
        {
            long total = _entries.Values.Where(e => e.Loading.IsCompletedSuccessfully).Sum(e => e.Bytes);
            foreach (var (hash, entry) in _entries.Where(kv => kv.Value.Leases == 0 && kv.Value.Loading.IsCompletedSuccessfully)
                         .OrderBy(kv => kv.Value.LastUsed).ToList())
            {
                if (total <= options.CacheBudgetBytes) break;
                _entries.Remove(hash);
                total -= entry.Bytes;
                victims.Add((hash, entry.Loading));
                _evictions++;
                FleetMetrics.Evictions.Inc();
                FleetMetrics.CacheBytes.Set(total);
            }
        }
        foreach (var (hash, model) in victims)
        {
            var loaded = await model;
            await executor.RunAsync(_ => loaded.Dispose());
            logger.LogInformation("Evicted model {Model} (least recently used; cache budget {Budget:0.0} MB)", hash[..12], options.CacheBudgetBytes / 1e6);
        }
    }

    public ModelCacheStats Stats()
    {
        lock (_entries)
        {
            var loaded = _entries.Where(kv => kv.Value.Loading.IsCompletedSuccessfully).OrderByDescending(kv => kv.Value.LastUsed).ToList();
            return new ModelCacheStats(loaded.Select(kv => kv.Key).ToList(), loaded.Sum(kv => kv.Value.Bytes), _loads, _evictions, _lastLoadMs);
        }
    }
}
