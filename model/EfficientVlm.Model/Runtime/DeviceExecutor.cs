using System.Collections.Concurrent;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Runtime;

/// <summary>Whether autograd records the work item's operations.</summary>
public enum GradMode
{
    /// <summary>Inference and evaluation: no graph is built (torch.no_grad).</summary>
    NoGrad,
    /// <summary>Training steps: gradients are tracked (torch.enable_grad).</summary>
    Grad,
}

/// <summary>Settings of one device executor; bound from configuration section <c>Fleet:Executor</c>.</summary>
public sealed record DeviceExecutorOptions
{
    /// <summary><c>auto</c> (CUDA when available, else CPU), <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; init; } = "auto";

    /// <summary>Dedicated worker threads. One per GPU is right; on CPU several let small requests overlap.</summary>
    public int WorkerThreads { get; init; } = 1;

    /// <summary>libtorch intra-op threads (process-wide). 0 leaves libtorch's default.</summary>
    public int TorchThreads { get; init; }

    /// <summary>
    /// CPUs the worker threads (and libtorch's threads they start) are pinned to (Linux); null: not pinned. On a CPU host,
    /// pinning the executor to its own cores while the rest of the process runs elsewhere stands in for a device.
    /// </summary>
    public int[]? Cpus { get; init; }

    /// <summary>Most work items waiting; submitters beyond it wait for room (back-pressure).</summary>
    public int QueueCapacity { get; init; } = 4096;

    /// <summary>Throws <see cref="ArgumentException"/> for settings that cannot work.</summary>
    public void Validate()
    {
        if (WorkerThreads < 1) throw new ArgumentException($"WorkerThreads must be at least 1 (was {WorkerThreads}).");
        if (TorchThreads < 0) throw new ArgumentException($"TorchThreads must be 0 or more (was {TorchThreads}).");
        if (QueueCapacity < 1) throw new ArgumentException($"QueueCapacity must be at least 1 (was {QueueCapacity}).");
        if (string.IsNullOrWhiteSpace(Device)) throw new ArgumentException("Device must be auto, cpu, cuda or cuda:N.");
        if (Cpus is { } cpus && (cpus.Length == 0 || cpus.Any(c => c < 0)))
            throw new ArgumentException("Cpus must list one or more CPU numbers (0 or more), or be left out.");
    }
}

/// <summary>What a work item gets: the device to put tensors on, and its cancellation token.</summary>
public readonly record struct WorkContext(Device Device, CancellationToken CancellationToken);

/// <summary>
/// Runs tensor work on dedicated threads of one device. TorchSharp dispose scopes and grad mode are
/// thread-local, and async code (an Orleans grain after any await) may resume on another thread,
/// so every tensor operation goes through here: each work item runs on a worker thread inside its
/// own dispose scope with its own grad mode, and only its managed result (or a tensor or module it
/// returns, which is detached from the scope and then owned by the caller) leaves it. A work item
/// that returns a model inside another object must call <see cref="Scopes.Keep{T}"/> itself.
/// </summary>
public sealed class DeviceExecutor : IDisposable
{
    private readonly BlockingCollection<IWorkItem> _queue;
    private readonly Thread[] _workers;
    private int _disposed;

    public DeviceExecutor(DeviceExecutorOptions options)
    {
        options.Validate();
        Options = options;
        TorchRuntime.EnsureLoaded();
        if (options.TorchThreads > 0) torch.set_num_threads(options.TorchThreads); // process-wide
        Device = ResolveDevice(options.Device);
        _queue = new BlockingCollection<IWorkItem>(new ConcurrentQueue<IWorkItem>(), options.QueueCapacity);
        _workers = new Thread[options.WorkerThreads];
        var started = new Task[_workers.Length];
        for (int i = 0; i < _workers.Length; i++)
        {
            var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            started[i] = ready.Task;
            _workers[i] = new Thread(() => WorkerLoop(ready))
            {
                IsBackground = true,
                Name = $"device-executor:{Device.type}:{i}",
            };
            _workers[i].Start();
        }
        try
        {
            Task.WaitAll(started); // a worker that cannot pin itself fails the constructor, not the process
        }
        catch (AggregateException e)
        {
            _queue.CompleteAdding();
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
    }

    public DeviceExecutorOptions Options { get; }

    /// <summary>The device every work item of this executor uses.</summary>
    public Device Device { get; }

    /// <summary>Work items queued and not yet started.</summary>
    public int QueueLength => _queue.Count;

    private int _running;
    private long _lastProgressTicks = DateTime.UtcNow.Ticks;

    /// <summary>Work items running now.</summary>
    public int Running => Volatile.Read(ref _running);

    /// <summary>When a work item last started or ended (UTC): how a health check tells a busy executor from a stalled one.</summary>
    public DateTime LastProgress => new(Interlocked.Read(ref _lastProgressTicks), DateTimeKind.Utc);

    /// <summary>
    /// How long the executor has had work without starting or finishing any (zero when it has none): a long work item
    /// (a whole-split evaluation) shows here as a growing stall, a busy stream of short ones does not.
    /// </summary>
    public TimeSpan Stalled(DateTime nowUtc) => Running + QueueLength == 0 ? TimeSpan.Zero : nowUtc - LastProgress;

    private void Progress() => Interlocked.Exchange(ref _lastProgressTicks, DateTime.UtcNow.Ticks);

    /// <summary>Runs <paramref name="work"/> on a worker thread and returns its result.</summary>
    /// <remarks>
    /// Tensors created by the work are disposed when it ends, except a <see cref="Tensor"/> result,
    /// which is detached and must be disposed by the caller. Cancelling before the work starts
    /// cancels the returned task without running it; after it starts, the work sees the token in
    /// its <see cref="WorkContext"/> and decides.
    /// </remarks>
    public Task<T> RunAsync<T>(Func<WorkContext, T> work, GradMode mode = GradMode.NoGrad,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<T>(cancellationToken);
        var item = new WorkItem<T>(work, mode, cancellationToken);
        try
        {
            _queue.Add(item, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            return Task.FromCanceled<T>(cancellationToken);
        }
        catch (InvalidOperationException)
        {
            throw new ObjectDisposedException(nameof(DeviceExecutor), "The device executor is shutting down.");
        }
        return item.Task;
    }

    /// <summary>Runs <paramref name="work"/> on a worker thread.</summary>
    public Task RunAsync(Action<WorkContext> work, GradMode mode = GradMode.NoGrad,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        return RunAsync(ctx => { work(ctx); return true; }, mode, cancellationToken);
    }

    /// <summary>Maps <c>auto|cpu|cuda|cuda:N</c> to a TorchSharp device, checking CUDA is there.</summary>
    public static Device ResolveDevice(string name)
    {
        TorchRuntime.EnsureLoaded();
        var normalized = name.Trim().ToLowerInvariant();
        if (normalized == "auto") return torch.cuda.is_available() ? torch.CUDA : torch.CPU;
        if (normalized.StartsWith("cuda", StringComparison.Ordinal) && !torch.cuda.is_available())
            throw new InvalidOperationException(
                $"Device '{name}' was asked for but CUDA is not available in this process (CPU build of libtorch, or no GPU).");
        return torch.device(normalized);
    }

    private void WorkerLoop(TaskCompletionSource ready)
    {
        try
        {
            // pinned before it runs any work: libtorch's intra-op threads, started by this thread's first parallel op, inherit the CPUs
            if (Options.Cpus is { } cpus) CpuAffinity.PinCurrentThread(cpus);
        }
        catch (Exception e)
        {
            ready.SetException(e);
            return;
        }
        ready.SetResult();
        foreach (var item in _queue.GetConsumingEnumerable())
        {
            Interlocked.Increment(ref _running);
            Progress();
            try
            {
                item.Run(Device);
            }
            finally
            {
                Interlocked.Decrement(ref _running);
                Progress();
            }
        }
    }

    /// <summary>Stops taking work, lets queued work finish, and joins the worker threads.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _queue.CompleteAdding();
        foreach (var worker in _workers) worker.Join();
        _queue.Dispose();
    }

    private interface IWorkItem
    {
        void Run(Device device);
    }

    private sealed class WorkItem<T> : IWorkItem
    {
        private readonly Func<WorkContext, T> _work;
        private readonly GradMode _mode;
        private readonly CancellationToken _cancellationToken;
        private readonly TaskCompletionSource<T> _completion =
            new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly CancellationTokenRegistration _registration;

        public WorkItem(Func<WorkContext, T> work, GradMode mode, CancellationToken cancellationToken)
        {
            _work = work;
            _mode = mode;
            _cancellationToken = cancellationToken;
            // Cancelling while queued completes the task at once; the worker then skips the item.
            if (cancellationToken.CanBeCanceled)
                _registration = cancellationToken.Register(
                    static state => ((WorkItem<T>)state!).CancelIfQueued(), this);
        }

        public Task<T> Task => _completion.Task;

        private int _started;

        private void CancelIfQueued()
        {
            if (Interlocked.CompareExchange(ref _started, 1, 0) == 0)
                _completion.TrySetCanceled(_cancellationToken);
        }

        public void Run(Device device)
        {
            _registration.Dispose();
            if (Interlocked.CompareExchange(ref _started, 1, 0) != 0) return; // cancelled while queued
            try
            {
                T result;
                using (var scope = torch.NewDisposeScope())
                using (_mode == GradMode.Grad ? torch.enable_grad() : torch.no_grad())
                {
                    result = _work(new WorkContext(device, _cancellationToken));
                    if (result is Tensor tensor) tensor.DetachFromDisposeScope();
                    else if (result is nn.Module module) Scopes.Keep(module);
                }
                _completion.TrySetResult(result);
            }
            catch (OperationCanceledException e) when (e.CancellationToken == _cancellationToken)
            {
                _completion.TrySetCanceled(_cancellationToken);
            }
            catch (Exception e)
            {
                _completion.TrySetException(e);
            }
        }
    }
}
