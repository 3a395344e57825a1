using System.Diagnostics;
using System.Threading.Channels;
using EfficientVlm.Artifacts;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Grains.Jobs;
using EfficientVlm.Grains.Placement;
using EfficientVlm.Model.Images;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Serving;
using Microsoft.Extensions.Logging;
using Orleans.Concurrency;

namespace EfficientVlm.Grains.Serving;

/// <summary>
/// Serves one replica of a ready variant. Calls interleave (the grain is reentrant): each checks and
/// decodes its input off the executor, then joins a queue; one loop takes the first queued request,
/// waits up to <see cref="ServingOptions.MaxQueueDelay"/> for more (at most
/// <see cref="ServingOptions.MaxBatchSize"/>), and runs them as one batch on the device executor with
/// the model leased from the silo's <see cref="ModelCache"/>.
/// </summary>
[GpuPlacement]
[Reentrant]
public sealed class InferenceReplicaGrain(DeviceExecutor executor, ModelCache cache, ServingOptions options, ILocalSiloDetails silo,
    BlobArtifactStore store, DiskArtifactCache disk, ILogger<InferenceReplicaGrain> logger) : Grain, IInferenceReplicaGrain
{
    private enum Kind { Answer, Verify, Caption, RankImages, RankTexts }

    private sealed record Pending(Kind Kind, float[][] Images, string Text, DateTime Enqueued, TaskCompletionSource<object> Result,
        string? Gallery = null, int K = 0);

    /// <summary>Largest k a retrieval call may ask for.</summary>
    public const int MaxK = 100;

    // Bounded: a burst beyond it is refused ("busy, retry") instead of holding decoded images without limit.
    private readonly Channel<Pending> _queue = Channel.CreateBounded<Pending>(new BoundedChannelOptions(options.MaxQueueLength)
    {
        SingleReader = true, FullMode = BoundedChannelFullMode.Wait,
    });
    private readonly CancellationTokenSource _stop = new();
    private readonly ImageLoader _images = new(options.Limits.Images);
    private ServingInfo _info = null!;
    private int _imageSize;
    private Task? _loop;
    private long _requests, _batches, _failures, _batched;
    private int _largest;
    private double _queueMs;

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        var key = this.GetPrimaryKeyString();
        int hash = key.LastIndexOf('#');
        if (hash < 1) throw new ArgumentException($"'{key}' is not a replica key (<variant>#<index>).");
        _info = await GrainFactory.GetGrain<IVariantGrain>(key[..hash]).Serving();
        using (var lease = await cache.AcquireAsync(_info.Model, cancellationToken))
            _imageSize = lease.Model.Config.ImageSize;
        _loop = Task.Run(() => BatchLoopAsync(_stop.Token));
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        _queue.Writer.TryComplete();
        await _stop.CancelAsync();
        if (_loop is not null) await _loop.WaitAsync(TimeSpan.FromSeconds(10), cancellationToken).ContinueWith(_ => { });
        foreach (var gallery in _galleries.Values.Where(g => g.IsCompletedSuccessfully).Select(g => g.Result))
            await executor.RunAsync(_ => gallery.Dispose());
    }

    public Task<string> Answer(byte[] image, string question) => Checked(async () =>
    {
        Require(FleetTask.Vqa);
        var text = options.Limits.CheckText(question, "question");
        return (string)await Enqueue(Kind.Answer, [await Decode(image, "image")], text);
    });

    public Task<bool> Verify(byte[] left, byte[] right, string statement) => Checked(async () =>
    {
        Require(FleetTask.Nlvr2);
        var text = options.Limits.CheckText(statement, "statement");
        var images = await Task.WhenAll(Decode(left, "left image"), Decode(right, "right image"));
        return (bool)await Enqueue(Kind.Verify, images, text);
    });

    public Task<string> Caption(byte[] image) => Checked(async () =>
    {
        Require(FleetTask.Captioning);
        return (string)await Enqueue(Kind.Caption, [await Decode(image, "image")], "");
    });

    public Task<IReadOnlyList<RankedItem>> RankImages(string gallery, string text, int k) => Checked(async () =>
    {
        Require(FleetTask.Retrieval);
        var query = options.Limits.CheckText(text, "text");
        var hash = await GalleryHash(gallery, k, needsTexts: false);
        return (IReadOnlyList<RankedItem>)await Enqueue(Kind.RankImages, [], query, hash, k);
    });

    public Task<IReadOnlyList<RankedItem>> RankTexts(string gallery, byte[] image, int k) => Checked(async () =>
    {
        Require(FleetTask.Retrieval);
        var hash = await GalleryHash(gallery, k, needsTexts: true);
        return (IReadOnlyList<RankedItem>)await Enqueue(Kind.RankTexts, [await Decode(image, "image")], "", hash, k);
    });

    private async Task<string> GalleryHash(string name, int k, bool needsTexts)
    {
        if (k is < 1 or > MaxK) throw new ArgumentException($"k must be 1..{MaxK} (was {k}).");
        Identifiers.Validate(name, "gallery name");
        var info = await GrainFactory.GetGrain<IFleetRegistryGrain>(IFleetRegistryGrain.DefaultKey).GetGallery(name)
                   ?? throw new ArgumentException($"No gallery '{name}' is registered.");
        if (needsTexts && info.Texts == 0) throw new ArgumentException($"Gallery '{name}' has no texts to rank.");
        return info.Hash;
    }

    // Galleries embedded by this replica's model, by content hash (built on first use, kept while the replica lives).
    private readonly Dictionary<string, Task<EmbeddedGallery>> _galleries = new(StringComparer.Ordinal);

    private Task<EmbeddedGallery> Gallery(string hash, ServingModel model)
    {
        lock (_galleries)
        {
            if (!_galleries.TryGetValue(hash, out var gallery) || gallery.IsFaulted)
                _galleries[hash] = gallery = EmbedGalleryAsync(hash, model);
            return gallery;
        }
    }

    private async Task<EmbeddedGallery> EmbedGalleryAsync(string hash, ServingModel model)
    {
        using var lease = await disk.AcquireAsync(store, new ArtifactRef(JobArtifacts.Gallery, hash));
        var folder = lease.Path;
        var files = Directory.GetFiles(Path.Combine(folder, GalleryLayout.ImagesFolder)).Where(GalleryLayout.IsImage).Order(StringComparer.Ordinal).ToList();
        var pixels = await Task.Run(() => files.Select(f => _images.Load(File.ReadAllBytes(f), _imageSize)).ToList());
        var textsFile = Path.Combine(folder, GalleryLayout.TextsFile);
        var texts = File.Exists(textsFile) ? System.Text.Json.JsonSerializer.Deserialize<List<string>>(File.ReadAllText(textsFile)) ?? [] : [];
        return await executor.RunAsync(ctx => model.EmbedGallery(files.Select(Path.GetFileName).ToList()!, pixels, texts, ctx.Device));
    }


    /// <summary>Counts refused input (the caller gets the ArgumentException as it is).</summary>
    private async Task<T> Checked<T>(Func<Task<T>> call)
    {
        try
        {
            return await call();
        }
        catch (ArgumentException)
        {
            FleetMetrics.Requests.WithLabels(_info.VariantId, _info.Task.ToString(), "bad_input").Inc();
            throw;
        }
    }

    public Task<string> Warm() => Task.FromResult(silo.SiloAddress.ToString()); // activation loaded the model

    public Task Retire()
    {
        this.DeactivateOnIdle();
        return Task.CompletedTask;
    }

    public Task<ReplicaStats> Stats()
    {
        long batches = Interlocked.Read(ref _batches);
        return Task.FromResult(new ReplicaStats(silo.SiloAddress.ToString(), Interlocked.Read(ref _requests), batches, Volatile.Read(ref _largest),
            batches == 0 ? 0 : (double)Interlocked.Read(ref _batched) / batches, batches == 0 ? 0 : _queueMs / Math.Max(1, Interlocked.Read(ref _batched)),
            Interlocked.Read(ref _failures), Interlocked.Read(ref _batched), _queueMs));
    }

    private void Require(FleetTask task)
    {
        if (_info.Task != task)
            throw new ArgumentException($"Variant '{_info.VariantId}' serves {_info.Task}, not {task}.");
    }

    /// <summary>Checks and decodes an image on the thread pool (not the executor, not the grain's turn).</summary>
    private Task<float[]> Decode(byte[]? bytes, string what)
    {
        if (bytes is null || bytes.Length == 0) throw new ArgumentException($"The {what} is empty.");
        return Task.Run(() =>
        {
            try
            {
                return _images.Load(bytes, _imageSize);
            }
            catch (ImageRejectedException e)
            {
                throw new ArgumentException($"The {what} was rejected: {e.Message}");
            }
        });
    }

    private Task<object> Enqueue(Kind kind, float[][] images, string text, string? gallery = null, int k = 0)
    {
        Interlocked.Increment(ref _requests);
        var pending = new Pending(kind, images, text, DateTime.UtcNow, new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously),
            gallery, k);
        if (!_queue.Writer.TryWrite(pending))
            throw new ReplicaBusyException(_stop.IsCancellationRequested ? "The replica is shutting down; retry." : "The replica is busy (its queue is full); retry.");
        return pending.Result.Task;
    }

    private async Task BatchLoopAsync(CancellationToken stop)
    {
        var reader = _queue.Reader;
        var batch = new List<Pending>(options.MaxBatchSize);
        try
        {
            while (await reader.WaitToReadAsync(stop))
            {
                batch.Clear();
                if (!reader.TryRead(out var first)) continue;
                batch.Add(first);
                var deadline = first.Enqueued + options.MaxQueueDelay;
                while (batch.Count < options.MaxBatchSize)
                {
                    if (reader.TryRead(out var next)) { batch.Add(next); continue; }
                    var wait = deadline - DateTime.UtcNow;
                    if (wait <= TimeSpan.Zero) break;
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stop);
                    timeout.CancelAfter(wait);
                    try
                    {
                        if (!await reader.WaitToReadAsync(timeout.Token)) break;
                    }
                    catch (OperationCanceledException) when (!stop.IsCancellationRequested)
                    {
                        break;
                    }
                }
                await RunAsync(batch, stop);
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            // shutting down
        }
        while (reader.TryRead(out var left)) left.Result.TrySetException(new ReplicaBusyException("The replica shut down; retry."));
    }

    /// <summary>Each request's own k of a batch ranked at the batch's largest k.</summary>
    private static object[] Ranked((string Item, double Score)[][] rows, List<Pending> part) =>
        rows.Select((row, i) => (object)row.Take(part[i].K).Select(r => new RankedItem(r.Item, r.Score)).ToList()).ToArray();

    private async Task RunAsync(List<Pending> batch, CancellationToken stop)
    {
        var started = DateTime.UtcNow;
        try
        {
            using var lease = await cache.AcquireAsync(_info.Model, stop);
            var model = lease.Model;
            var items = batch.ToList();
            var results = new object[items.Count];
            // one executor call per kind of request (and gallery) in the batch; a replica serves one task, so usually one group
            foreach (var group in items.Select((p, i) => (p, i)).GroupBy(x => (x.p.Kind, x.p.Gallery)))
            {
                var members = group.ToList();
                var part = members.Select(x => x.p).ToList();
                EmbeddedGallery? gallery = group.Key.Gallery is { } g ? await Gallery(g, model) : null;
                object[] answers = await executor.RunAsync(ctx => group.Key.Kind switch
                {
                    Kind.Answer => model.Vqa(part.Select(p => p.Images[0]).ToList(), part.Select(p => p.Text).ToList(), ctx.Device).Cast<object>().ToArray(),
                    Kind.Verify => model.Nlvr(part.Select(p => p.Images[0]).ToList(), part.Select(p => p.Images[1]).ToList(),
                        part.Select(p => p.Text).ToList(), ctx.Device).Cast<object>().ToArray(),
                    Kind.Caption => model.Caption(part.Select(p => p.Images[0]).ToList(), ctx.Device).Cast<object>().ToArray(),
                    Kind.RankImages => Ranked(model.RankImages(gallery!, part.Select(p => p.Text).ToList(), part.Max(p => p.K), ctx.Device), part),
                    _ => Ranked(model.RankTexts(gallery!, part.Select(p => p.Images[0]).ToList(), part.Max(p => p.K), ctx.Device), part),
                }, cancellationToken: stop);
                for (int j = 0; j < members.Count; j++) results[members[j].i] = answers[j];
            }
            var variant = _info.VariantId;
            FleetMetrics.BatchSize.WithLabels(variant).Observe(items.Count);
            foreach (var p in items) FleetMetrics.QueueDelay.WithLabels(variant).Observe((started - p.Enqueued).TotalSeconds);
            var done = DateTime.UtcNow;
            for (int i = 0; i < items.Count; i++)
            {
                FleetMetrics.Latency.WithLabels(variant).Observe((done - items[i].Enqueued).TotalSeconds);
                items[i].Result.TrySetResult(results[i]);
            }
            FleetMetrics.Requests.WithLabels(variant, _info.Task.ToString(), "ok").Inc(items.Count);
            Interlocked.Increment(ref _batches);
            Interlocked.Add(ref _batched, items.Count);
            lock (_queue) _queueMs += items.Sum(p => (started - p.Enqueued).TotalMilliseconds);
            int largest;
            while ((largest = Volatile.Read(ref _largest)) < items.Count && Interlocked.CompareExchange(ref _largest, items.Count, largest) != largest) { }
        }
        catch (Exception e)
        {
            Interlocked.Add(ref _failures, batch.Count);
            FleetMetrics.Requests.WithLabels(_info.VariantId, _info.Task.ToString(), "error").Inc(batch.Count);
            logger.LogError(e, "Replica {Replica}: a batch of {Count} failed", this.GetPrimaryKeyString(), batch.Count);
            foreach (var p in batch) p.Result.TrySetException(e);
        }
    }
}
