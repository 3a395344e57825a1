using Azure.Storage.Blobs;
using EfficientVlm.Artifacts;
using EfficientVlm.Fleet.Tests.Infrastructure;
using EfficientVlm.Grains.Jobs;
using Microsoft.Extensions.Logging.Abstractions;

namespace EfficientVlm.Fleet.Tests.Integration;

/// <summary>The silo's disk cache of downloaded folders, against a real Azurite.</summary>
[Collection(AzuriteCollection.Name)]
public sealed class DiskArtifactCacheTests(AzuriteFixture azurite) : IDisposable
{
    private const int FolderBytes = 10_000;
    private readonly string _folder = Directory.CreateTempSubdirectory("fleet-disk-cache-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    /// <summary>Three stored folders of <see cref="FolderBytes"/> bytes each (two files), and a cache with room for two and a half.</summary>
    private async Task<(BlobArtifactStore Store, List<ArtifactRef> Refs, DiskArtifactCache Cache)> Setup()
    {
        var store = new BlobArtifactStore(new BlobServiceClient(azurite.ConnectionString), "disk-" + Guid.NewGuid().ToString("N")[..10]);
        var refs = new List<ArtifactRef>();
        for (int i = 0; i < 3; i++)
        {
            var source = Path.Combine(_folder, $"source-{i}");
            Directory.CreateDirectory(Path.Combine(source, "sub"));
            File.WriteAllBytes(Path.Combine(source, "a.bin"), Enumerable.Repeat((byte)i, FolderBytes / 2).ToArray());
            File.WriteAllBytes(Path.Combine(source, "sub", "b.bin"), Enumerable.Repeat((byte)(i + 100), FolderBytes / 2).ToArray());
            refs.Add(await store.PutFolderAsync("dataset", source));
        }
        var cache = new DiskArtifactCache(new FleetJobOptions { WorkDirectory = Path.Combine(_folder, "work"), DiskCacheBudgetBytes = 2 * FolderBytes + FolderBytes / 2 },
            NullLogger<DiskArtifactCache>.Instance);
        return (store, refs, cache);
    }

    private static List<string> Cached(DiskArtifactCache cache) => cache.Entries().Select(e => Path.GetFileName(e.Path)).ToList();

    [Fact]
    public async Task Past_its_budget_the_least_recently_used_copy_goes_and_comes_back_intact_when_needed_again()
    {
        var (store, refs, cache) = await Setup();
        var (a, b, c) = (refs[0].Hash, refs[1].Hash, refs[2].Hash);
        (await cache.AcquireAsync(store, refs[0])).Dispose();
        (await cache.AcquireAsync(store, refs[1])).Dispose();
        (await cache.AcquireAsync(store, refs[0])).Dispose();   // a is now more recent than b
        Assert.Equal([b, a], Cached(cache));

        using (var third = await cache.AcquireAsync(store, refs[2]))  // over budget: b goes
        {
            Assert.Equal([a, c], Cached(cache));
            Assert.Equal(Path.Combine(cache.Root, "dataset", c), third.Path);
            Assert.Equal(Enumerable.Repeat((byte)102, FolderBytes / 2), File.ReadAllBytes(Path.Combine(third.Path, "sub", "b.bin")));
        }
        Assert.All(cache.Entries(), e => Assert.Equal(FolderBytes, e.Bytes));
        Assert.True(cache.Entries().Sum(e => e.Bytes) <= cache.BudgetBytes);

        using var again = await cache.AcquireAsync(store, refs[1]);   // downloaded again, hash-checked; a (least recent) goes
        Assert.Equal(Enumerable.Repeat((byte)1, FolderBytes / 2), File.ReadAllBytes(Path.Combine(again.Path, "a.bin")));
        Assert.Equal([c, b], Cached(cache));
        Assert.False(Directory.Exists(Path.Combine(cache.Root, "dataset", a)));
    }

    [Fact]
    public async Task A_copy_in_use_is_never_deleted_and_the_budget_holds_again_once_it_is_released()
    {
        var (store, refs, cache) = await Setup();
        var held = new List<DiskArtifactCache.Lease>();
        foreach (var r in refs) held.Add(await cache.AcquireAsync(store, r));
        Assert.Equal(3, cache.Entries().Count);            // all three in use: over budget, nothing deleted
        Assert.All(cache.Entries(), e => Assert.Equal(1, e.Holders));
        Assert.Equal(0, cache.Trim());

        using (var second = await cache.AcquireAsync(store, refs[0]))    // a second holder of the same copy
        {
            held[0].Dispose();
            Assert.Equal(3, cache.Entries().Count);        // still held by the second lease
        }
        Assert.Equal([refs[1].Hash, refs[2].Hash], Cached(cache)); // the last release trimmed the least recently used, now free
        held[1].Dispose();
        held[1].Dispose();                                 // a lease released twice counts once
        Assert.Equal(2, cache.Entries().Count);            // within budget: nothing more goes
        Assert.Equal(1, cache.Entries().Single(e => e.Path.EndsWith(refs[2].Hash, StringComparison.Ordinal)).Holders);
        held[2].Dispose();
    }

    [Fact]
    public async Task The_order_of_use_survives_a_restart_which_clears_what_a_crash_left_half_done()
    {
        var (store, refs, cache) = await Setup();
        (await cache.AcquireAsync(store, refs[1])).Dispose();
        (await cache.AcquireAsync(store, refs[0])).Dispose();
        // a download and a deletion cut off by a crash: not entries, and gone after the restart
        var download = Directory.CreateDirectory(Path.Combine(cache.Root, "dataset", refs[2].Hash + ".download-0123")).FullName;
        var deletion = Directory.CreateDirectory(Path.Combine(cache.Root, "dataset", refs[2].Hash + ".deleting-4567")).FullName;
        File.WriteAllText(Path.Combine(download, "a.bin"), "partial");
        Assert.Equal(2, cache.Entries().Count);

        var restarted = new DiskArtifactCache(new FleetJobOptions { WorkDirectory = Path.Combine(_folder, "work"), DiskCacheBudgetBytes = FolderBytes + FolderBytes / 2 },
            NullLogger<DiskArtifactCache>.Instance);
        Assert.False(Directory.Exists(download));
        Assert.False(Directory.Exists(deletion));
        Assert.Equal([refs[1].Hash, refs[0].Hash], Cached(restarted));
        Assert.Equal(1, restarted.Trim());                  // a smaller budget after the restart: the older copy goes
        Assert.Equal([refs[0].Hash], Cached(restarted));
        await Assert.ThrowsAsync<ArgumentException>(() => restarted.AcquireAsync(store, new ArtifactRef("dataset", "../../escape")));
        await Assert.ThrowsAsync<KeyNotFoundException>(() => restarted.AcquireAsync(store, new ArtifactRef("dataset", new string('0', 64))));
        Assert.All(restarted.Entries(), e => Assert.Equal(0, e.Holders)); // a failed acquisition holds nothing
    }
}
