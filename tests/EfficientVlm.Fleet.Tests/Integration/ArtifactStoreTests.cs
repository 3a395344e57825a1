using Azure.Storage.Blobs;
using EfficientVlm.Fleet.Tests.Infrastructure;
using EfficientVlm.Artifacts;

namespace EfficientVlm.Fleet.Tests.Integration;

/// <summary>The content-addressed artefact store against a real Azurite.</summary>
[Collection(AzuriteCollection.Name)]
public sealed class ArtifactStoreTests(AzuriteFixture azurite) : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("fleet-artifacts-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private BlobArtifactStore Store(string container) => new(new BlobServiceClient(azurite.ConnectionString), container);

    [Fact]
    public async Task A_folder_round_trips_by_content_hash_and_identical_content_is_stored_once()
    {
        var store = Store("art-" + Guid.NewGuid().ToString("N")[..10]);
        var source = Path.Combine(_folder, "ckpt");
        Directory.CreateDirectory(Path.Combine(source, "sub"));
        File.WriteAllText(Path.Combine(source, "config.json"), "{\"hidden\": 32}");
        File.WriteAllBytes(Path.Combine(source, "sub", "model.safetensors"), Enumerable.Range(0, 5000).Select(i => (byte)i).ToArray());

        var first = await store.PutFolderAsync("checkpoint", source);
        var again = await store.PutFolderAsync("checkpoint", source);
        Assert.Equal(first, again);                  // named by content
        Assert.Equal(64, first.Hash.Length);

        var names = await store.ListAsync();
        Assert.Equal(3, names.Count);                // two content blobs + one manifest, nothing temporary
        Assert.Single(names, n => n.StartsWith("manifests/checkpoint/", StringComparison.Ordinal));

        var target = Path.Combine(_folder, "copy");
        await store.DownloadFolderAsync(first, target);
        Assert.Equal(File.ReadAllBytes(Path.Combine(source, "sub", "model.safetensors")), File.ReadAllBytes(Path.Combine(target, "sub", "model.safetensors")));
        Assert.Equal("{\"hidden\": 32}", File.ReadAllText(Path.Combine(target, "config.json")));

        File.WriteAllText(Path.Combine(source, "config.json"), "{\"hidden\": 64}");
        var changed = await store.PutFolderAsync("checkpoint", source);
        Assert.NotEqual(first, changed);
        Assert.Equal(5, (await store.ListAsync()).Count); // only the changed file and the new manifest were added
    }

    [Fact]
    public async Task Unknown_artifacts_and_bad_kinds_are_clear_errors()
    {
        var store = Store("art-" + Guid.NewGuid().ToString("N")[..10]);
        await store.ListAsync(); // creates the container
        var missing = await Assert.ThrowsAsync<KeyNotFoundException>(() => store.GetManifestAsync(new ArtifactRef("checkpoint", new string('0', 64))));
        Assert.Contains("No artifact checkpoint/000", missing.Message);
        Assert.False(await store.ExistsAsync(new ArtifactRef("checkpoint", new string('1', 64))));
        await Assert.ThrowsAsync<ArgumentException>(() => store.PutFolderAsync("Bad Kind", _folder));
    }
}
