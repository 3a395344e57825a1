using System.Diagnostics;
using System.Threading.Channels;
using EfficientVlm.Grains.Abstractions;
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
    ILogger<InferenceReplicaGrain> logger) : Grain, IInferenceReplicaGrain
{
    private sealed record Pending(float[][] Images, string Text, DateTime Enqueued, TaskCompletionSource<object> Result);

    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
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
    }

    public Task<string> Answer(byte[] image, string question) => Checked(async () =>
    {
        Require(FleetTask.Vqa);
        var text = options.Limits.CheckText(question, "question");
        return (string)await Enqueue([await Decode(image, "image")], text);
    });

    public Task<bool> Verify(byte[] left, byte[] right, string statement) => Checked(async () =>
    {
        Require(FleetTask.Nlvr2);
        var text = options.Limits.CheckText(statement, "statement");
        var images = await Task.WhenAll(Decode(left, "left image"), Decode(right, "right image"));
        return (bool)await Enqueue(images, text);
    });

    public Task<string> Caption(byte[] image) => Checked(async () =>
    {
        Require(FleetTask.Captioning);
        return (string)await Enqueue([await Decode(image, "image")], "");
    });

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

    public Task Warm() => Task.CompletedTask; // activation loaded the model

    public Task<ReplicaStats> Stats()
    {
        long batches = Interlocked.Read(ref _batches);
        return Task.FromResult(new ReplicaStats(silo.SiloAddress.ToString(), Interlocked.Read(ref _requests), batches, Volatile.Read(ref _largest),
            batches == 0 ? 0 : (double)Interlocked.Read(ref _batched) / batches, batches == 0 ? 0 : _queueMs / Math.Max(1, Interlocked.Read(ref _batched)),
            Interlocked.Read(ref _failures)));
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

    private Task<object> Enqueue(float[][] images, string text)
    {
        Interlocked.Increment(ref _requests);
        var pending = new Pending(images, text, DateTime.UtcNow, new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously));
        if (!_queue.Writer.TryWrite(pending)) throw new InvalidOperationException("The replica is shutting down; retry.");
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
        while (reader.TryRead(out var left)) left.Result.TrySetException(new InvalidOperationException("The replica shut down; retry."));
    }

    private async Task RunAsync(List<Pending> batch, CancellationToken stop)
    {
        var started = DateTime.UtcNow;
        try
        {
            using var lease = await cache.AcquireAsync(_info.Model, stop);
            var model = lease.Model;
            var items = batch.ToList();
            object[] results = await executor.RunAsync(ctx => _info.Task switch
            {
                FleetTask.Vqa => model.Vqa(items.Select(p => p.Images[0]).ToList(), items.Select(p => p.Text).ToList(), ctx.Device).Cast<object>().ToArray(),
                FleetTask.Nlvr2 => model.Nlvr(items.Select(p => p.Images[0]).ToList(), items.Select(p => p.Images[1]).ToList(),
                    items.Select(p => p.Text).ToList(), ctx.Device).Cast<object>().ToArray(),
                FleetTask.Captioning => model.Caption(items.Select(p => p.Images[0]).ToList(), ctx.Device).Cast<object>().ToArray(),
                _ => throw new NotSupportedException($"Serving {_info.Task} is not built yet."),
            }, cancellationToken: stop);
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
