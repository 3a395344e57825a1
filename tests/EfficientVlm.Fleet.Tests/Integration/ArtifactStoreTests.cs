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
    public async Task A_folder_of_many_files_goes_up_and_comes_down_in_parallel_with_the_same_manifest_every_time()
    {
        var store = Store("art-" + Guid.NewGuid().ToString("N")[..10]);
        var source = Path.Combine(_folder, "data");
        // more files than transfers in flight, over nested folders, two of them with equal content
        var files = Enumerable.Range(0, 5 * BlobArtifactStore.ParallelTransfers)
            .ToDictionary(i => $"images/{(i % 3 == 0 ? "train" : "test")}/{i:000}.png", i => Enumerable.Range(0, 100 + i).Select(b => (byte)(b * i)).ToArray());
        files["images/copy.png"] = files["images/test/001.png"];
        foreach (var (name, bytes) in files)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(source, name))!);
            File.WriteAllBytes(Path.Combine(source, name), bytes);
        }

        var first = await store.PutFolderAsync("dataset", source);
        Assert.Equal(first, await store.PutFolderAsync("dataset", source));    // the manifest does not depend on which upload ended first
        var manifest = await store.GetManifestAsync(first);
        Assert.Equal(files.Keys.Order(StringComparer.Ordinal), manifest.Files.Keys);
        Assert.Equal(files.Count, (await store.ListAsync()).Count);            // files - 1 distinct blobs + the manifest

        var target = Path.Combine(_folder, "copy");
        await store.DownloadFolderAsync(first, target);
        foreach (var (name, bytes) in files) Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(target, name)));
        Assert.Equal(files.Count, Directory.GetFiles(target, "*", SearchOption.AllDirectories).Length);
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

    [Fact]
    public async Task A_manifest_naming_a_file_outside_its_folder_is_refused_and_nothing_is_written_there()
    {
        var container = "art-" + Guid.NewGuid().ToString("N")[..10];
        var store = Store(container);
        var source = Path.Combine(_folder, "data");
        Directory.CreateDirectory(source);
        File.WriteAllText(Path.Combine(source, "a.txt"), "harmless");
        var good = await store.PutFolderAsync("dataset", source);
        var hash = (await store.GetManifestAsync(good)).Files["a.txt"].Hash;
        // a hostile client writes its own manifest
        var evil = System.Text.Encoding.UTF8.GetBytes("{\"Kind\":\"dataset\",\"Files\":{\"../../escaped.txt\":{\"Hash\":\"" + hash + "\",\"Length\":8}}}");
        var evilHash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(evil));
        await new BlobServiceClient(azurite.ConnectionString).GetBlobContainerClient(container)
            .GetBlobClient($"manifests/dataset/{evilHash}.json").UploadAsync(new BinaryData(evil));

        var target = Path.Combine(_folder, "deep", "cache", "out");
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => store.DownloadFolderAsync(new ArtifactRef("dataset", evilHash), target));
        Assert.Contains("outside its folder", e.Message);
        Assert.False(File.Exists(Path.Combine(_folder, "deep", "escaped.txt")));
        Assert.False(Directory.Exists(target));
    }
}
