using System.Security.Cryptography;
using System.Text.Json;
using Azure;
using Azure.Storage.Blobs;
using Azure.Storage.Blobs.Models;

namespace EfficientVlm.Grains.Artifacts;

/// <summary>A stored folder: what it is (kind) and the content hash that names it.</summary>
[GenerateSerializer, Immutable]
public sealed record ArtifactRef([property: Id(0)] string Kind, [property: Id(1)] string Hash);

/// <summary>The manifest of a stored folder: relative file name -> content hash and size.</summary>
public sealed record ArtifactManifest(string Kind, IReadOnlyDictionary<string, ArtifactFile> Files);

public sealed record ArtifactFile(string Hash, long Length);

/// <summary>
/// Model artefacts (checkpoints, datasets, vocabularies) in Azure Blob storage, content-addressed:
/// every file goes to <c>blobs/&lt;sha256&gt;</c> (a blob upload commits atomically, and the same content
/// is stored once), then the folder's manifest is written last to
/// <c>manifests/&lt;kind&gt;/&lt;sha256 of the manifest&gt;.json</c>. A reader trusts only manifests, so an
/// interrupted upload leaves nothing visible (and nothing named as temporary). Weights never travel
/// in grain state or messages: grains hold only the <see cref="ArtifactRef"/>.
/// </summary>
public sealed class BlobArtifactStore(BlobServiceClient service, string containerName = "artifacts")
{
    private readonly BlobContainerClient _container = service.GetBlobContainerClient(containerName);
    private int _created;

    private async Task EnsureContainerAsync(CancellationToken ct)
    {
        if (Volatile.Read(ref _created) == 1) return;
        await _container.CreateIfNotExistsAsync(cancellationToken: ct);
        Volatile.Write(ref _created, 1);
    }

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Uploads every file of <paramref name="folder"/> and commits the manifest last.</summary>
    public async Task<ArtifactRef> PutFolderAsync(string kind, string folder, CancellationToken ct = default)
    {
        ValidateKind(kind);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder} does not exist.");
        await EnsureContainerAsync(ct);
        var files = new SortedDictionary<string, ArtifactFile>(StringComparer.Ordinal);
        foreach (var path in Directory.GetFiles(folder, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var name = Path.GetRelativePath(folder, path).Replace('\\', '/');
            var hash = await HashFileAsync(path, ct);
            var blob = _container.GetBlobClient($"blobs/{hash}");
            if (!await blob.ExistsAsync(ct))
            {
                await using var stream = File.OpenRead(path);
                try
                {
                    await blob.UploadAsync(stream, overwrite: false, ct);
                }
                catch (RequestFailedException e) when (e.ErrorCode == BlobErrorCode.BlobAlreadyExists)
                {
                    // another writer stored the same content meanwhile: same bytes, nothing to do
                }
            }
            files[name] = new ArtifactFile(hash, new FileInfo(path).Length);
        }
        var manifest = JsonSerializer.SerializeToUtf8Bytes(new ArtifactManifest(kind, files), Json);
        var manifestHash = Convert.ToHexStringLower(SHA256.HashData(manifest));
        var manifestBlob = _container.GetBlobClient(ManifestName(kind, manifestHash));
        try
        {
            await manifestBlob.UploadAsync(new BinaryData(manifest), overwrite: false, ct);
        }
        catch (RequestFailedException e) when (e.ErrorCode == BlobErrorCode.BlobAlreadyExists)
        {
            // the same folder content was committed before
        }
        return new ArtifactRef(kind, manifestHash);
    }

    /// <summary>Downloads a stored folder into <paramref name="target"/>, checking every file's hash.</summary>
    public async Task DownloadFolderAsync(ArtifactRef artifact, string target, CancellationToken ct = default)
    {
        var manifest = await GetManifestAsync(artifact, ct);
        var temp = target + $".download-{Guid.NewGuid():N}";
        Directory.CreateDirectory(temp);
        try
        {
            foreach (var (name, file) in manifest.Files)
            {
                var path = Path.Combine(temp, name);
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                await _container.GetBlobClient($"blobs/{file.Hash}").DownloadToAsync(path, ct);
                if (await HashFileAsync(path, ct) != file.Hash)
                    throw new InvalidDataException($"Artifact {artifact.Kind}/{artifact.Hash}: {name} does not match its hash.");
            }
            if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
            Directory.Move(temp, target);
        }
        finally
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
    }

    public async Task<ArtifactManifest> GetManifestAsync(ArtifactRef artifact, CancellationToken ct = default)
    {
        ValidateKind(artifact.Kind);
        var blob = _container.GetBlobClient(ManifestName(artifact.Kind, artifact.Hash));
        try
        {
            var content = await blob.DownloadContentAsync(ct);
            return content.Value.Content.ToObjectFromJson<ArtifactManifest>()
                   ?? throw new InvalidDataException($"Artifact {artifact.Kind}/{artifact.Hash} has an empty manifest.");
        }
        catch (RequestFailedException e) when (e.Status == 404)
        {
            throw new KeyNotFoundException($"No artifact {artifact.Kind}/{artifact.Hash} in container '{_container.Name}'.", e);
        }
    }

    public async Task<bool> ExistsAsync(ArtifactRef artifact, CancellationToken ct = default) =>
        await _container.GetBlobClient(ManifestName(artifact.Kind, artifact.Hash)).ExistsAsync(ct);

    /// <summary>Names of every blob in the container (for tests and audits).</summary>
    public async Task<List<string>> ListAsync(CancellationToken ct = default)
    {
        await EnsureContainerAsync(ct);
        var names = new List<string>();
        await foreach (var item in _container.GetBlobsAsync(cancellationToken: ct)) names.Add(item.Name);
        return names;
    }

    private static string ManifestName(string kind, string hash) => $"manifests/{kind}/{hash}.json";

    private static void ValidateKind(string kind) => Identifiers.Validate(kind, "artifact kind");

    private static async Task<string> HashFileAsync(string path, CancellationToken ct)
    {
        await using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, ct));
    }
}
