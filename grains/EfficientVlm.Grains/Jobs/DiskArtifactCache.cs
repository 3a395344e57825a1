using EfficientVlm.Artifacts;
using EfficientVlm.Grains.Serving;
using Microsoft.Extensions.Logging;

namespace EfficientVlm.Grains.Jobs;

/// <summary>One folder in a silo's disk cache (for tests and operators).</summary>
public sealed record DiskCacheEntry(string Path, long Bytes, DateTime LastUsedUtc, int Holders);

/// <summary>
/// The silo's local copies of stored folders (datasets, models, galleries) under
/// <c>Fleet:Jobs:WorkDirectory/cache</c>: a folder is downloaded (hash-checked) the first time a job or
/// replica needs it and reused after. When the copies pass <see cref="FleetJobOptions.DiskCacheBudgetBytes"/>,
/// the least recently used ones that nobody holds are deleted; a copy in use is never deleted, so the
/// budget can be exceeded while every copy is busy (the next release trims again). The last use is the
/// folder's modification time, so the order survives a silo restart. One silo per work directory.
/// </summary>
public sealed class DiskArtifactCache
{
    private readonly FleetJobOptions _options;
    private readonly ILogger<DiskArtifactCache> _logger;
    private readonly Dictionary<string, int> _holders = new(StringComparer.Ordinal); // folder -> leases; guards trims too
    private DateTime _lastStamp;
    private bool _overBudget;

    /// <summary>Removes what an earlier process left half done: downloads cut off and deletions interrupted.</summary>
    public DiskArtifactCache(FleetJobOptions options, ILogger<DiskArtifactCache> logger)
    {
        _options = options;
        _logger = logger;
        Root = Path.Combine(options.WorkDirectory, "cache");
        foreach (var leftover in Folders().Where(d => !IsEntry(d)))
        {
            try
            {
                Directory.Delete(leftover, recursive: true);
                logger.LogInformation("Disk cache: removed {Folder}, left unfinished by an earlier run", Path.GetRelativePath(Root, leftover));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                logger.LogWarning(e, "Disk cache: could not remove {Folder}", leftover);
            }
        }
    }

    public string Root { get; }

    public long BudgetBytes => _options.DiskCacheBudgetBytes;

    /// <summary>A local copy held while it is read; dispose it when done (the copy may then be deleted).</summary>
    public sealed class Lease(DiskArtifactCache cache, string path) : IDisposable
    {
        private int _released;

        /// <summary>The folder's local path.</summary>
        public string Path => path;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) cache.Release(path);
        }
    }

    /// <summary>The local copy of <paramref name="artifact"/> from <paramref name="from"/>, downloaded if this silo has none.</summary>
    public async Task<Lease> AcquireAsync(BlobArtifactStore from, ArtifactRef artifact, CancellationToken ct = default)
    {
        var path = BlobArtifactStore.CachePath(Root, artifact);
        bool download;
        lock (_holders)
        {
            _holders[path] = _holders.GetValueOrDefault(path) + 1; // held from here: a trim cannot delete it under us
            download = !Directory.Exists(path);
        }
        try
        {
            await from.CachedFolderAsync(artifact, Root, ct);
            lock (_holders) Directory.SetLastWriteTimeUtc(path, Stamp());
        }
        catch
        {
            Release(path);
            throw;
        }
        var lease = new Lease(this, path);
        if (download) TrimSafely();
        return lease;
    }

    /// <summary>Every complete copy, least recently used first.</summary>
    public IReadOnlyList<DiskCacheEntry> Entries()
    {
        lock (_holders) return Scan();
    }

    /// <summary>Deletes the least recently used copies nobody holds until the cache is within its budget; returns how many went.</summary>
    public int Trim()
    {
        lock (_holders)
        {
            var entries = Scan();
            long total = entries.Sum(e => e.Bytes);
            int deleted = 0;
            foreach (var entry in entries.Where(e => e.Holders == 0))
            {
                if (total <= _options.DiskCacheBudgetBytes) break;
                // moved aside first, so a deletion that fails half way never leaves a partial copy that looks complete
                var doomed = $"{entry.Path}.deleting-{Guid.NewGuid():N}";
                Directory.Move(entry.Path, doomed);
                Directory.Delete(doomed, recursive: true);
                total -= entry.Bytes;
                deleted++;
                FleetMetrics.DiskEvictions.Inc();
                _logger.LogInformation("Disk cache: deleted {Folder} ({Megabytes:0.0} MB, least recently used; budget {Budget:0.0} MB)",
                    Path.GetRelativePath(Root, entry.Path), entry.Bytes / 1e6, _options.DiskCacheBudgetBytes / 1e6);
            }
            _overBudget = total > _options.DiskCacheBudgetBytes;
            FleetMetrics.DiskCacheBytes.Set(total);
            return deleted;
        }
    }

    private void Release(string path)
    {
        bool trim;
        lock (_holders)
        {
            int left = _holders.GetValueOrDefault(path) - 1;
            if (left > 0) _holders[path] = left;
            else _holders.Remove(path);
            trim = left <= 0 && _overBudget;
        }
        if (trim) TrimSafely();
    }

    private void TrimSafely()
    {
        try
        {
            Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _logger.LogWarning(e, "Disk cache: a trim failed; the cache may stay over budget until the next download or release");
        }
    }

    /// <summary>Strictly increasing times, so two uses in the same clock tick keep their order.</summary>
    private DateTime Stamp()
    {
        var now = DateTime.UtcNow;
        _lastStamp = now > _lastStamp ? now : _lastStamp.AddTicks(1);
        return _lastStamp;
    }

    /// <summary>Complete copies are Root/kind/hash; downloads in progress (hash.download-id) and deletions (hash.deleting-id) are not.</summary>
    private static bool IsEntry(string folder) => !Path.GetFileName(folder).Contains('.', StringComparison.Ordinal);

    /// <summary>Every folder at Root/kind/*: the copies, and whatever a download or deletion left there.</summary>
    private IEnumerable<string> Folders() =>
        Directory.Exists(Root) ? Directory.EnumerateDirectories(Root).SelectMany(Directory.EnumerateDirectories) : [];

    private List<DiskCacheEntry> Scan() =>
        Folders()
            .Where(IsEntry)
            .Select(d => new DiskCacheEntry(d,
                new DirectoryInfo(d).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length),
                Directory.GetLastWriteTimeUtc(d), _holders.GetValueOrDefault(d)))
            .OrderBy(e => e.LastUsedUtc).ThenBy(e => e.Path, StringComparer.Ordinal)
            .ToList();
}
