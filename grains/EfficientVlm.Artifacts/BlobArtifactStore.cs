using System.Security.Cryptography;
using System.Text.Json;
using Azure;
using Azure.Storage.Blobs;
using Azure.Storage.Blobs.Models;
using EfficientVlm.Grains.Abstractions;

namespace EfficientVlm.Artifacts;

/// <summary>A stored folder: what it is (kind) and the content hash that names it.</summary>
public sealed record ArtifactRef(string Kind, string Hash)
{
    public override string ToString() => $"{Kind}/{Hash}";
}

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
public sealed class BlobArtifactStore
{
    private readonly BlobServiceClient _service;
    private readonly BlobContainerClient _container;
    private readonly string _prefix;
    private int _created;

    /// <param name="prefix">Blob-name prefix of this store's blobs and manifests ("" for the fleet's shared artefacts; see <see cref="Scope"/>).</param>
    public BlobArtifactStore(BlobServiceClient service, string containerName = "artifacts", string prefix = "")
    {
        _service = service;
        _container = service.GetBlobContainerClient(containerName);
        _prefix = prefix;
    }

    /// <summary>
    /// A private store inside this container (under <c>jobs/&lt;name&gt;/</c>) for one job's checkpoints and
    /// intermediate results. Only that job writes there, one runner at a time, which is what makes
    /// <see cref="DeleteAsync"/> safe; <see cref="DeleteAllAsync"/> removes it when the job is done. The
    /// shared store is never deleted from: its blobs may be named by many manifests being written.
    /// </summary>
    public BlobArtifactStore Scope(string name)
    {
        Identifiers.Validate(name, "artifact scope");
        return new BlobArtifactStore(_service, _container.Name, $"{_prefix}jobs/{name}/");
    }

    private async Task EnsureContainerAsync(CancellationToken ct)
    {
        if (Volatile.Read(ref _created) == 1) return;
        await _container.CreateIfNotExistsAsync(cancellationToken: ct);
        Volatile.Write(ref _created, 1);
    }

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Uploads every file of <paramref name="folder"/> and commits the manifest last.</summary>
    /// <param name="include">Relative names (with '/') of the files to store; null: every file.</param>
    public async Task<ArtifactRef> PutFolderAsync(string kind, string folder, CancellationToken ct = default, Func<string, bool>? include = null)
    {
        ValidateKind(kind);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder} does not exist.");
        await EnsureContainerAsync(ct);
        var paths = Directory.GetFiles(folder, "*", SearchOption.AllDirectories)
            .Select(path => (Path: path, Name: Path.GetRelativePath(folder, path).Replace('\\', '/')))
            .Where(f => include is null || include(f.Name))
            .ToList();
        var stored = new ArtifactFile[paths.Count];
        // a data set is tens of thousands of small files: one request at a time would spend its time waiting on round trips
        await Parallel.ForEachAsync(Enumerable.Range(0, paths.Count), Transfers(ct), async (i, token) =>
        {
            var hash = await HashFileAsync(paths[i].Path, token);
            await StoreBlobAsync(paths[i].Path, hash, token);
            stored[i] = new ArtifactFile(hash, new FileInfo(paths[i].Path).Length);
        });
        var files = new SortedDictionary<string, ArtifactFile>(StringComparer.Ordinal);
        for (int i = 0; i < paths.Count; i++) files[paths[i].Name] = stored[i];
        if (files.Count == 0) throw new ArgumentException($"{folder} has no files to store.");
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

    /// <summary>Stores one file under its hash (once: the same content is never uploaded twice).</summary>
    private async Task StoreBlobAsync(string path, string hash, CancellationToken ct)
    {
        var blob = _container.GetBlobClient($"{_prefix}blobs/{hash}");
        if (await blob.ExistsAsync(ct)) return;
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

    /// <summary>
    /// Deletes a stored folder of a job scope: its manifest, then its blobs that no other manifest of
    /// the scope names. Only for <see cref="Scope"/> stores (one writer at a time). Returns the number of blobs removed.
    /// </summary>
    public async Task<int> DeleteAsync(ArtifactRef artifact, CancellationToken ct = default)
    {
        if (_prefix.Length == 0) throw new InvalidOperationException("The shared artefact store is never deleted from; delete within a job scope.");
        ArtifactManifest manifest;
        try
        {
            manifest = await GetManifestAsync(artifact, ct);
        }
        catch (KeyNotFoundException)
        {
            return 0; // deleted before
        }
        var candidates = manifest.Files.Values.Select(f => f.Hash).ToHashSet(StringComparer.Ordinal);
        await _container.GetBlobClient(ManifestName(artifact.Kind, artifact.Hash)).DeleteIfExistsAsync(cancellationToken: ct);
        foreach (var other in await ListManifestsAsync(ct))
            foreach (var file in (await GetManifestAsync(other, ct)).Files.Values)
                candidates.Remove(file.Hash);
        int removed = 0;
        foreach (var hash in candidates)
            if ((await _container.GetBlobClient($"{_prefix}blobs/{hash}").DeleteIfExistsAsync(cancellationToken: ct)).Value)
                removed++;
        return removed;
    }

    /// <summary>Deletes everything of a job scope (manifests first, so nothing half-deleted looks committed).</summary>
    public async Task<int> DeleteAllAsync(CancellationToken ct = default)
    {
        if (_prefix.Length == 0) throw new InvalidOperationException("The shared artefact store is never deleted from; delete within a job scope.");
        await EnsureContainerAsync(ct);
        var names = new List<string>();
        await foreach (var item in _container.GetBlobsAsync(BlobTraits.None, BlobStates.None, _prefix, ct)) names.Add(item.Name);
        foreach (var name in names.OrderBy(n => n.StartsWith($"{_prefix}manifests/", StringComparison.Ordinal) ? 0 : 1))
            await _container.GetBlobClient(name).DeleteIfExistsAsync(cancellationToken: ct);
        return names.Count;
    }

    /// <summary>Every committed folder in the container.</summary>
    public async Task<List<ArtifactRef>> ListManifestsAsync(CancellationToken ct = default)
    {
        await EnsureContainerAsync(ct);
        var refs = new List<ArtifactRef>();
        var root = $"{_prefix}manifests/";
        await foreach (var item in _container.GetBlobsAsync(BlobTraits.None, BlobStates.None, root, ct))
        {
            var name = item.Name[root.Length..];
            int slash = name.LastIndexOf('/');
            refs.Add(new ArtifactRef(name[..slash], Path.GetFileNameWithoutExtension(name[(slash + 1)..])));
        }
        return refs;
    }

    /// <summary>
    /// A local copy of a stored folder under <paramref name="cacheRoot"/> (downloaded once, checked, then
    /// reused): the path of the folder.
    /// </summary>
    public async Task<string> CachedFolderAsync(ArtifactRef artifact, string cacheRoot, CancellationToken ct = default)
    {
        var target = CachePath(cacheRoot, artifact);
        if (Directory.Exists(target)) return target;
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        try
        {
            await DownloadFolderAsync(artifact, target, ct, replace: false);
        }
        catch (IOException) when (Directory.Exists(target))
        {
            // another job of this silo downloaded it meanwhile
        }
        return target;
    }

    /// <summary>Where <see cref="CachedFolderAsync"/> keeps its copy of <paramref name="artifact"/>: <c>cacheRoot/kind/hash</c>.</summary>
    public static string CachePath(string cacheRoot, ArtifactRef artifact)
    {
        ValidateKind(artifact.Kind);
        Identifiers.ValidateHash(artifact.Hash, "artifact hash");
        return Path.Combine(cacheRoot, artifact.Kind.Replace('/', '_'), artifact.Hash);
    }

    /// <summary>Downloads a stored folder into <paramref name="target"/>, checking every file's hash.</summary>
    /// <param name="replace">Replace an existing <paramref name="target"/>; false: fail with an IOException when it exists.</param>
    public async Task DownloadFolderAsync(ArtifactRef artifact, string target, CancellationToken ct = default, bool replace = true)
    {
        var manifest = await GetManifestAsync(artifact, ct);
        var temp = target + $".download-{Guid.NewGuid():N}";
        Directory.CreateDirectory(temp);
        try
        {
            var root = Path.GetFullPath(temp) + Path.DirectorySeparatorChar;
            var files = new List<(string Name, string Path, string Hash)>(manifest.Files.Count);
            foreach (var (name, file) in manifest.Files)
            {
                // manifests come from clients: a name must stay inside the folder
                var path = Path.GetFullPath(Path.Combine(temp, name));
                if (Path.IsPathRooted(name) || name.Split('/', '\\').Contains("..") || !path.StartsWith(root, StringComparison.Ordinal))
                    throw new InvalidDataException($"Artifact {artifact.Kind}/{artifact.Hash} names a file outside its folder: '{name}'.");
                Identifiers.ValidateHash(file.Hash, "file hash");
                files.Add((name, path, file.Hash));
            }
            foreach (var folder in files.Select(f => Path.GetDirectoryName(f.Path)!).Distinct()) Directory.CreateDirectory(folder);
            await Parallel.ForEachAsync(files, Transfers(ct), async (f, token) =>
            {
                await _container.GetBlobClient($"{_prefix}blobs/{f.Hash}").DownloadToAsync(f.Path, token);
                if (await HashFileAsync(f.Path, token) != f.Hash)
                    throw new InvalidDataException($"Artifact {artifact.Kind}/{artifact.Hash}: {f.Name} does not match its hash.");
            });
            if (replace && Directory.Exists(target)) Directory.Delete(target, recursive: true);
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

    /// <summary>Names of every blob in the container, all scopes included (for tests and audits).</summary>
    public async Task<List<string>> ListAsync(CancellationToken ct = default)
    {
        await EnsureContainerAsync(ct);
        var names = new List<string>();
        await foreach (var item in _container.GetBlobsAsync(cancellationToken: ct)) names.Add(item.Name);
        return names;
    }

    private string ManifestName(string kind, string hash) => $"{_prefix}manifests/{kind}/{hash}.json";

    /// <summary>A kind is one or more ids joined by '/' (e.g. <c>model</c>, <c>checkpoints/vqa-demo-s35-1a2b3c4d</c>).</summary>
    private static void ValidateKind(string kind)
    {
        if (string.IsNullOrEmpty(kind)) throw new ArgumentException("The artifact kind is empty.");
        foreach (var part in kind.Split('/')) Identifiers.Validate(part, "artifact kind");
    }

    /// <summary>Blob requests in flight at once while a folder goes up or comes down.</summary>
    public const int ParallelTransfers = 8;

    private static ParallelOptions Transfers(CancellationToken ct) => new() { MaxDegreeOfParallelism = ParallelTransfers, CancellationToken = ct };

    private static async Task<string> HashFileAsync(string path, CancellationToken ct)
    {
        await using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, ct));
    }
}
