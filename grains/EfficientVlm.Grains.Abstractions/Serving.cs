namespace EfficientVlm.Grains.Abstractions;

/// <summary>What a client needs to call a ready variant: its task, its model and how many replicas serve it.</summary>
[GenerateSerializer, Immutable]
public sealed record ServingInfo(
    [property: Id(0)] string VariantId,
    [property: Id(1)] FleetTask Task,
    [property: Id(2)] string Model,
    [property: Id(3)] int Replicas);

/// <summary>A replica's counters since it was activated (Served and QueueMillisecondsTotal are cumulative, for rates over an interval).</summary>
[GenerateSerializer, Immutable]
public sealed record ReplicaStats(
    [property: Id(0)] string Silo,
    [property: Id(1)] long Requests,
    [property: Id(2)] long Batches,
    [property: Id(3)] int LargestBatch,
    [property: Id(4)] double MeanBatch,
    [property: Id(5)] double MeanQueueMilliseconds,
    [property: Id(6)] long Failures,
    [property: Id(7)] long Served = 0,
    [property: Id(8)] double QueueMillisecondsTotal = 0);

/// <summary>
/// One replica of a ready variant (key: <c>&lt;variant id&gt;#&lt;index&gt;</c>), placed on a GPU silo. It loads
/// the variant's shrunk model through the silo's model cache and batches concurrent calls
/// dynamically (architecture.md decision 5). Bad input fails with an <see cref="ArgumentException"/>
/// whose message says what is wrong; the replica and its silo carry on.
/// </summary>
public interface IInferenceReplicaGrain : IGrainWithStringKey
{
    /// <summary>VQA: the answer to <paramref name="question"/> about the image (PNG or JPEG bytes).</summary>
    Task<string> Answer(byte[] image, string question);

    /// <summary>NLVR2: whether <paramref name="statement"/> is true of the left and right images.</summary>
    Task<bool> Verify(byte[] left, byte[] right, string statement);

    /// <summary>Captioning: a caption of the image.</summary>
    Task<string> Caption(byte[] image);

    /// <summary>Retrieval: the <paramref name="k"/> images of a registered gallery that best match the text, best first.</summary>
    Task<IReadOnlyList<RankedItem>> RankImages(string gallery, string text, int k);

    /// <summary>Retrieval: the <paramref name="k"/> texts of a registered gallery that best match the image, best first.</summary>
    Task<IReadOnlyList<RankedItem>> RankTexts(string gallery, byte[] image, int k);

    /// <summary>Loads the model if it is not loaded (aliases move only to warm variants); returns the silo it runs on.</summary>
    Task<string> Warm();

    /// <summary>Deactivates this replica once its calls are done (its variant no longer routes to it).</summary>
    Task Retire();

    Task<ReplicaStats> Stats();

    public static string Key(string variant, int index) => $"{variant}#{index}";
}

/// <summary>A ranked gallery item (an image's file name or a text) with its ITC similarity.</summary>
[GenerateSerializer, Immutable]
public sealed record RankedItem([property: Id(0)] string Item, [property: Id(1)] double Score);

/// <summary>
/// Resolutions of variant ids and aliases (<see cref="IFleetRegistryGrain.Resolve"/>) kept for a short time, so
/// that most calls skip the registry while an alias move is still seen within <c>ttl</c>. Only successful
/// resolutions are kept, and at most 10,000 names (the names come from callers).
/// </summary>
public sealed class ServingResolver(TimeSpan ttl)
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, (ServingInfo Info, DateTime Until)> _resolved =
        new(StringComparer.Ordinal);

    /// <param name="resolve">Asks the registry (each caller passes its own, with its own cancellation).</param>
    public async Task<ServingInfo> ResolveAsync(string variantOrAlias, Func<string, Task<ServingInfo>> resolve)
    {
        if (_resolved.TryGetValue(variantOrAlias, out var cached) && cached.Until >= DateTime.UtcNow) return cached.Info;
        var info = await resolve(variantOrAlias);
        if (_resolved.Count > 10_000) _resolved.Clear();
        _resolved[variantOrAlias] = (info, DateTime.UtcNow + ttl);
        return info;
    }

    /// <summary>A replica of the resolved variant, picked at random.</summary>
    public async Task<IInferenceReplicaGrain> ReplicaAsync(IGrainFactory grains, string variantOrAlias, Func<string, Task<ServingInfo>> resolve)
    {
        var info = await ResolveAsync(variantOrAlias, resolve);
        return grains.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(info.VariantId, Random.Shared.Next(info.Replicas)));
    }
}

/// <summary>The layout of a retrieval gallery folder, shared by the uploading client and the serving replicas.</summary>
public static class GalleryLayout
{
    public const string ImagesFolder = "images", TextsFile = "texts.json";

    /// <summary>A PNG or JPEG by its name (the loader checks the bytes).</summary>
    public static bool IsImage(string path) =>
        path.EndsWith(".png", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".jpg", StringComparison.OrdinalIgnoreCase)
        || path.EndsWith(".jpeg", StringComparison.OrdinalIgnoreCase);
}

/// <summary>
/// A retrieval gallery: an uploaded folder (<c>gallery</c> artefact) with <c>images/</c> (PNG or JPEG)
/// and optionally <c>texts.json</c> (a JSON array of strings).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record GalleryInfo(
    [property: Id(0)] string Name,
    [property: Id(1)] string Hash,
    [property: Id(2)] int Images,
    [property: Id(3)] int Texts,
    [property: Id(4)] DateTimeOffset RegisteredAt);
