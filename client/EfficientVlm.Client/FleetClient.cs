using Azure.Data.Tables;
using Azure.Storage.Blobs;
using EfficientVlm.Artifacts;
using EfficientVlm.Grains.Abstractions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Runtime;

namespace EfficientVlm.Client;

/// <summary>
/// The fleet's client SDK. Connect once, share the instance, dispose it at the end.
/// Calls retry transient cluster errors (a silo that just died, a gateway that moved): every
/// call here is idempotent.
/// </summary>
public sealed class FleetClient : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly FleetClientOptions _options;

    private readonly FleetConnectionOptions _connection;
    private BlobArtifactStore? _artifacts;

    private readonly GatewayLoss _gatewayLoss;

    private FleetClient(IHost host, FleetClientOptions options, FleetConnectionOptions connection, GatewayLoss gatewayLoss)
    {
        _host = host;
        _gatewayLoss = gatewayLoss;
        _options = options;
        _connection = connection;
        Grains = host.Services.GetRequiredService<IClusterClient>();
    }

    /// <summary>The fleet's artefact store (the same Azure Storage account as the cluster).</summary>
    public BlobArtifactStore Artifacts =>
        _artifacts ??= new BlobArtifactStore(new BlobServiceClient(_connection.StorageConnectionString), _connection.ArtifactContainer);

    /// <summary>The underlying Orleans client, for callers who need a grain this SDK does not wrap yet.</summary>
    public IClusterClient Grains { get; }

    /// <summary>Connects to the cluster described by <paramref name="connection"/>.</summary>
    /// <exception cref="FleetUnavailableException">No gateway answered within <see cref="FleetClientOptions.ConnectTimeout"/>.</exception>
    public static async Task<FleetClient> ConnectAsync(FleetConnectionOptions connection,
        FleetClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        connection.Validate();
        options ??= new FleetClientOptions();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.SetMinimumLevel(options.LogLevel);
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
        var gatewayLoss = new GatewayLoss();
        builder.Services.AddSingleton<IClusterConnectionStatusObserver>(gatewayLoss);
        builder.UseOrleansClient(client =>
        {
            client.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = connection.ClusterId;
                o.ServiceId = connection.ServiceId;
            });
            if (connection.Clustering == "Localhost")
                client.UseLocalhostClustering(connection.LocalhostGatewayPort, connection.ServiceId, connection.ClusterId);
            else
                client.UseAzureStorageClustering(o => o.TableServiceClient = new TableServiceClient(connection.StorageConnectionString));
            client.Configure<GatewayOptions>(o => o.GatewayListRefreshPeriod = TimeSpan.FromSeconds(5));
        });
        var host = builder.Build();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.ConnectTimeout);
        try
        {
            await host.StartAsync(timeout.Token);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            host.Dispose();
            throw new FleetUnavailableException(
                $"Could not connect to fleet cluster '{connection.ClusterId}' within {options.ConnectTimeout.TotalSeconds:0} s: {e.Message}", e);
        }
        return new FleetClient(host, options, connection, gatewayLoss);
    }

    /// <summary>Runs a small computation on a silo's device executor.</summary>
    public Task<DeviceProbeResult> ProbeDeviceAsync(CancellationToken cancellationToken = default) =>
        CallAsync(() => Grains.GetGrain<IDeviceProbeGrain>(0).Probe(), cancellationToken);

    /// <summary>Uploads a data folder (as written by <c>vlm data generate</c>) and registers it; returns it with its content hash.</summary>
    /// <exception cref="ArgumentException">The folder is missing or is not a data folder.</exception>
    public async Task<DatasetInfo> UploadDatasetAsync(string folder, string name, CancellationToken cancellationToken = default)
    {
        Identifiers.Validate(name, "dataset name");
        if (!Directory.Exists(folder)) throw new ArgumentException($"No folder {folder}.");
        if (!File.Exists(Path.Combine(folder, "vocab.txt")) || !Directory.Exists(Path.Combine(folder, "images")))
            throw new ArgumentException($"{folder} is not a data folder (it needs vocab.txt and images/; write one with `vlm data generate`).");
        var stored = await Artifacts.PutFolderAsync("dataset", folder, cancellationToken);
        var manifest = await Artifacts.GetManifestAsync(stored, cancellationToken);
        var registration = new DatasetRegistration(name, stored.Hash, manifest.Files.Count, manifest.Files.Values.Sum(f => f.Length));
        return await CallAsync(() => Registry.RegisterDataset(registration), cancellationToken);
    }

    public Task<IReadOnlyList<DatasetInfo>> ListDatasetsAsync(CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.ListDatasets(), cancellationToken);

    /// <summary>Uploads a checkpoint folder (config.json + model.safetensors); returns its content hash.</summary>
    /// <exception cref="ArgumentException">The folder is not a checkpoint.</exception>
    public async Task<string> UploadModelAsync(string folder, CancellationToken cancellationToken = default)
    {
        if (!File.Exists(Path.Combine(folder, "config.json")) || !File.Exists(Path.Combine(folder, "model.safetensors")))
            throw new ArgumentException($"{folder} is not a checkpoint folder (it needs config.json and model.safetensors).");
        return (await Artifacts.PutFolderAsync("model", folder, cancellationToken, include: n => !n.Contains('/'))).Hash;
    }

    /// <summary>Registers a compact model; without a student, the fleet distils one (watch it with <see cref="GetCompactModelAsync"/>).</summary>
    public Task<CompactModelInfo> RegisterCompactModelAsync(CompactModelRegistration registration,
        CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.RegisterCompactModel(registration), cancellationToken);

    public Task<IReadOnlyList<CompactModelInfo>> ListCompactModelsAsync(CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.ListCompactModels(), cancellationToken);

    /// <summary>Removes a compact model that no variant is made from (its distillation job stops; stored models stay).</summary>
    /// <exception cref="ArgumentException">No such model, or variants are made from it.</exception>
    public Task RemoveCompactModelAsync(string id, CancellationToken cancellationToken = default) =>
        CallAsync(async () => { await Registry.RemoveCompactModel(id); return true; }, cancellationToken);

    public Task<CompactModelInfo?> GetCompactModelAsync(string id, CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.GetCompactModel(id), cancellationToken);

    /// <summary>The variant for <paramref name="spec"/>: the existing one (ready or in progress) or a new one, started now.</summary>
    /// <exception cref="ArgumentException">Unknown model or dataset, a model that is not ready, bad settings.</exception>
    /// <exception cref="NoGpuSiloException">No silo can run the job now; the variant waits for one and starts when it joins.</exception>
    public Task<VariantInfo> EnsureVariantAsync(VariantSpec spec, JobSettings? settings = null, CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.EnsureVariant(spec, settings), cancellationToken);

    public Task<VariantInfo?> GetVariantAsync(string id, CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.GetVariant(id), cancellationToken);

    /// <summary>Removes a variant, running or not (its job stops, its replicas retire, its state goes; stored models stay).</summary>
    /// <exception cref="ArgumentException">No such variant, or an alias points at it.</exception>
    public Task RemoveVariantAsync(string id, CancellationToken cancellationToken = default) =>
        CallAsync(async () => { await Registry.RemoveVariant(id); return true; }, cancellationToken);

    public Task<IReadOnlyList<VariantInfo>> ListVariantsAsync(CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.ListVariants(), cancellationToken);

    /// <summary>The variant's state every <paramref name="interval"/> until it is Ready or Failed (the last item).</summary>
    /// <exception cref="ArgumentException">No such variant.</exception>
    public async IAsyncEnumerable<VariantInfo> WatchVariantAsync(string id, TimeSpan? interval = null,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (true)
        {
            var info = await GetVariantAsync(id, cancellationToken) ?? throw new UnknownVariantException($"No variant '{id}'.");
            yield return info;
            if (info.IsTerminal) yield break;
            await Task.Delay(interval ?? TimeSpan.FromSeconds(1), cancellationToken);
        }
    }

    private ServingResolver? _resolver;

    /// <summary>
    /// A replica of a ready variant, by variant id or alias. The resolution is cached for
    /// <see cref="FleetClientOptions.ResolveCacheTime"/>, so an alias that moves is followed within that time.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown variant or alias, or not ready.</exception>
    private Task<IInferenceReplicaGrain> ReplicaAsync(string variantOrAlias, CancellationToken ct)
    {
        Identifiers.Validate(variantOrAlias, "variant id or alias");
        _resolver ??= new ServingResolver(_options.ResolveCacheTime);
        return _resolver.ReplicaAsync(Grains, variantOrAlias, name => CallAsync(() => Registry.Resolve(name), ct));
    }

    /// <summary>
    /// Uploads a retrieval gallery (a folder with <c>images/</c> of PNG or JPEG files and optionally
    /// <c>texts.json</c>, a JSON array of strings) and registers it under <paramref name="name"/>.
    /// </summary>
    /// <exception cref="ArgumentException">Not such a folder, no images, more than 10,000 images, or a malformed texts.json.</exception>
    public async Task<GalleryInfo> UploadGalleryAsync(string folder, string name, CancellationToken cancellationToken = default)
    {
        Identifiers.Validate(name, "gallery name");
        var imageDir = Path.Combine(folder, GalleryLayout.ImagesFolder);
        if (!Directory.Exists(imageDir)) throw new ArgumentException($"{folder} has no images/ folder.");
        int images = Directory.GetFiles(imageDir).Count(GalleryLayout.IsImage);
        if (images == 0) throw new ArgumentException($"{imageDir} has no PNG or JPEG images.");
        if (images > 10_000) throw new ArgumentException($"{imageDir} has {images} images; a gallery holds at most 10,000.");
        int texts = 0;
        var textsFile = Path.Combine(folder, GalleryLayout.TextsFile);
        if (File.Exists(textsFile))
        {
            try
            {
                texts = System.Text.Json.JsonSerializer.Deserialize<List<string>>(File.ReadAllText(textsFile))?.Count ?? 0;
            }
            catch (System.Text.Json.JsonException e)
            {
                throw new ArgumentException($"{textsFile} is not a JSON array of strings: {e.Message}");
            }
        }
        var stored = await Artifacts.PutFolderAsync("gallery", folder, cancellationToken,
            include: n => n == GalleryLayout.TextsFile
                          || (n.StartsWith(GalleryLayout.ImagesFolder + "/", StringComparison.Ordinal) && n.Count(c => c == '/') == 1 && GalleryLayout.IsImage(n)));
        return await CallAsync(() => Registry.RegisterGallery(name, stored.Hash, images, texts), cancellationToken);
    }

    public Task<IReadOnlyList<GalleryInfo>> ListGalleriesAsync(CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.ListGalleries(), cancellationToken);

    /// <summary>Retrieval: the <paramref name="k"/> gallery images that best match <paramref name="text"/>, best first.</summary>
    public async Task<IReadOnlyList<RankedItem>> RankImagesAsync(string variant, string gallery, string text, int k = 5,
        CancellationToken cancellationToken = default)
    {
        var replica = await ReplicaAsync(variant, cancellationToken);
        return await CallAsync(() => replica.RankImages(gallery, text, k), cancellationToken);
    }

    /// <summary>Retrieval: the <paramref name="k"/> gallery texts that best match the image, best first.</summary>
    public async Task<IReadOnlyList<RankedItem>> RankTextsAsync(string variant, string gallery, byte[] image, int k = 5,
        CancellationToken cancellationToken = default)
    {
        var replica = await ReplicaAsync(variant, cancellationToken);
        return await CallAsync(() => replica.RankTexts(gallery, image, k), cancellationToken);
    }

    /// <summary>The ready variant a variant id or alias names now, and how it is served.</summary>
    /// <exception cref="ArgumentException">Unknown, or not ready.</exception>
    public Task<ServingInfo> ResolveAsync(string variantOrAlias, CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.Resolve(variantOrAlias), cancellationToken);

    /// <summary>Points an alias at a ready variant once its replicas are warm.</summary>
    public Task<AliasInfo> SetAliasAsync(string alias, string variant, CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.SetAlias(alias, variant), cancellationToken);

    public Task<IReadOnlyList<AliasInfo>> ListAliasesAsync(CancellationToken cancellationToken = default) =>
        CallAsync(() => Registry.ListAliases(), cancellationToken);

    /// <summary>VQA: answers <paramref name="question"/> about an image (PNG or JPEG bytes).</summary>
    /// <exception cref="ArgumentException">Bad input (corrupt or oversize image, empty or overlong text), or a variant that is not ready or of another task.</exception>
    public async Task<string> AnswerAsync(string variant, byte[] image, string question, CancellationToken cancellationToken = default)
    {
        var replica = await ReplicaAsync(variant, cancellationToken);
        return await CallAsync(() => replica.Answer(image, question), cancellationToken);
    }

    /// <summary>NLVR2: whether <paramref name="statement"/> is true of the pair of images.</summary>
    /// <exception cref="ArgumentException">As <see cref="AnswerAsync"/>.</exception>
    public async Task<bool> VerifyAsync(string variant, byte[] left, byte[] right, string statement, CancellationToken cancellationToken = default)
    {
        var replica = await ReplicaAsync(variant, cancellationToken);
        return await CallAsync(() => replica.Verify(left, right, statement), cancellationToken);
    }

    /// <summary>Captioning: a caption of the image.</summary>
    /// <exception cref="ArgumentException">As <see cref="AnswerAsync"/>.</exception>
    public async Task<string> CaptionAsync(string variant, byte[] image, CancellationToken cancellationToken = default)
    {
        var replica = await ReplicaAsync(variant, cancellationToken);
        return await CallAsync(() => replica.Caption(image), cancellationToken);
    }

    private IFleetRegistryGrain Registry => Grains.GetGrain<IFleetRegistryGrain>(IFleetRegistryGrain.DefaultKey);

    private Task<T> CallAsync<T>(Func<Task<T>> call, CancellationToken cancellationToken) =>
        TransientRetry.RunAsync(call, _options.Retry, _options.CallTimeout, cancellationToken, _gatewayLoss);

    public async ValueTask DisposeAsync()
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _host.StopAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            // the cluster may be gone already; nothing left to flush.
        }
        _host.Dispose();
    }
}

/// <summary>Client-side settings.</summary>
public sealed record FleetClientOptions
{
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Limit for one call including its retries.</summary>
    public TimeSpan CallTimeout { get; init; } = TimeSpan.FromSeconds(60);

    public RetryPolicy Retry { get; init; } = new();

    public LogLevel LogLevel { get; init; } = LogLevel.Warning;

    /// <summary>How long a variant id or alias stays resolved in this client (an alias move is seen within this time).</summary>
    public TimeSpan ResolveCacheTime { get; init; } = TimeSpan.FromSeconds(2);
}

/// <summary>Exponential back-off for transient cluster errors.</summary>
public sealed record RetryPolicy
{
    public int MaxAttempts { get; init; } = 8;

    /// <summary>
    /// Longest wait for one attempt before it counts as lost and is retried (the calls are idempotent). A call
    /// forwarded through a gateway to a silo that then dies gets no answer until Orleans's 30 s response timeout;
    /// this bounds how long such a call hangs when the client does not see the silo go (see <see cref="GatewayLoss"/>).
    /// </summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan FirstDelay { get; init; } = TimeSpan.FromMilliseconds(100);
    public TimeSpan MaxDelay { get; init; } = TimeSpan.FromSeconds(3);
}

/// <summary>
/// Tells calls in flight that the client lost a gateway: the silo behind it died or left, and a call that
/// another gateway forwarded to that silo gets no answer until Orleans's response timeout. Retrying such
/// calls at once (they are idempotent) shortens the wait from <see cref="RetryPolicy.AttemptTimeout"/> to
/// the moment the connection drops.
/// </summary>
public sealed class GatewayLoss : IClusterConnectionStatusObserver
{
    private CancellationTokenSource _current = new();

    /// <summary>Cancelled at the next gateway loss.</summary>
    public CancellationToken Token => Volatile.Read(ref _current).Token;

    public void NotifyGatewayCountChanged(int currentNumberOfGateways, int previousNumberOfGateways, bool connectionRecovered)
    {
        if (currentNumberOfGateways < previousNumberOfGateways) Signal();
    }

    public void NotifyClusterConnectionLost() => Signal();

    private void Signal() => Interlocked.Exchange(ref _current, new CancellationTokenSource()).Cancel(); // not disposed: calls may still link to it
}

/// <summary>The cluster could not be reached.</summary>
public sealed class FleetUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Retries calls that failed because the cluster was changing under them.</summary>
public static class TransientRetry
{
    /// <summary>True for errors that a retry can fix: silo or gateway loss, rejected or timed-out messages.</summary>
    public static bool IsTransient(Exception e) => e switch
    {
        OrleansMessageRejectionException or SiloUnavailableException or Orleans.Runtime.Messaging.ConnectionFailedException => true,
        TimeoutException => true,
        OrleansException { InnerException: { } inner } => IsTransient(inner),
        _ => false,
    };

    /// <param name="gatewayLoss">When given, an attempt in flight when the client loses a gateway is given up and retried at once.</param>
    public static async Task<T> RunAsync<T>(Func<Task<T>> call, RetryPolicy policy, TimeSpan timeout,
        CancellationToken cancellationToken, GatewayLoss? gatewayLoss = null)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        var delay = policy.FirstDelay;
        for (int attempt = 1; ; attempt++)
        {
            var lost = gatewayLoss?.Token ?? CancellationToken.None;
            try
            {
                using var attemptLimit = CancellationTokenSource.CreateLinkedTokenSource(limit.Token, lost);
                return await call().WaitAsync(policy.AttemptTimeout, attemptLimit.Token);
            }
            catch (OperationCanceledException) when (lost.IsCancellationRequested && !limit.IsCancellationRequested && attempt < policy.MaxAttempts)
            {
                // a silo left: its answer may never come (a call forwarded to it by another gateway); ask again
            }
            catch (Exception e) when (attempt < policy.MaxAttempts && IsTransient(e) && !limit.IsCancellationRequested)
            {
                await Task.Delay(delay, limit.Token);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, policy.MaxDelay.Ticks));
            }
            catch (OperationCanceledException) when (limit.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"The fleet call did not complete within {timeout.TotalSeconds:0} s (retries included).");
            }
        }
    }
}
