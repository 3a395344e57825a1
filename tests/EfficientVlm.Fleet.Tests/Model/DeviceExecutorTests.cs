using TorchSharp;
using EfficientVlm.Model.Runtime;

namespace EfficientVlm.Fleet.Tests.Model;

[Collection(TorchCollection.Name)]
public sealed class DeviceExecutorTests
{
    private static DeviceExecutor Cpu(int workers = 1, int capacity = 4096) =>
        new(new DeviceExecutorOptions { Device = "cpu", WorkerThreads = workers, QueueCapacity = capacity });

    [Fact]
    public async Task A_long_work_item_shows_as_a_growing_stall_and_an_idle_executor_as_none()
    {
        using var executor = Cpu();
        Assert.Equal(TimeSpan.Zero, executor.Stalled(DateTime.UtcNow.AddHours(1)));   // nothing to do: never stalled
        var release = new ManualResetEventSlim();
        var running = executor.RunAsync(_ => release.Wait(TimeSpan.FromSeconds(30)));
        var queued = executor.RunAsync(_ => 1);
        while (executor.Running == 0) await Task.Delay(5);
        var started = executor.LastProgress;
        Assert.Equal(1, executor.QueueLength);
        Assert.True(executor.Stalled(started.AddMinutes(5)) >= TimeSpan.FromMinutes(5));
        release.Set();
        await running;
        await queued;
        while (executor.Running > 0) await Task.Delay(5);
        Assert.True(executor.LastProgress > started, "finishing work counts as progress");
        Assert.Equal(TimeSpan.Zero, executor.Stalled(DateTime.UtcNow.AddHours(1)));
    }

    [Fact]
    public async Task Many_concurrent_submitters_each_get_their_own_result()
    {
        using var executor = Cpu(workers: 2);
        var submitters = Enumerable.Range(0, 16).Select(s => Task.Run(async () =>
        {
            var results = new List<float>();
            for (int i = 0; i < 25; i++)
            {
                int n = s * 100 + i;
                results.Add(await executor.RunAsync(ctx =>
                    torch.full(new long[] { 4 }, (float)n, device: ctx.Device).sum().item<float>()));
            }
            return (s, results);
        })).ToArray();

        foreach (var (s, results) in await Task.WhenAll(submitters))
            Assert.Equal(Enumerable.Range(0, 25).Select(i => 4f * (s * 100 + i)), results);
    }

    [Fact]
    public async Task Work_runs_on_the_executor_thread_with_the_requested_grad_mode()
    {
        using var executor = Cpu();
        var (thread, noGrad) = await executor.RunAsync(_ => (Thread.CurrentThread.Name, torch.is_grad_enabled()));
        var grad = await executor.RunAsync(_ => torch.is_grad_enabled(), GradMode.Grad);
        Assert.StartsWith("device-executor:", thread);
        Assert.False(noGrad);
        Assert.True(grad);
    }

    [Fact]
    public async Task An_exception_in_the_work_reaches_the_awaiting_caller_and_the_executor_goes_on()
    {
        using var executor = Cpu();
        var error = await Assert.ThrowsAsync<System.Runtime.InteropServices.ExternalException>(() => executor.RunAsync<float>(ctx =>
        {
            using var a = torch.ones(2, 3);
            using var b = torch.ones(4, 5);
            return a.mm(b).sum().item<float>(); // shape mismatch: TorchSharp throws
        }));
        Assert.Contains("cannot be multiplied", error.Message);

        var custom = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            executor.RunAsync<int>(_ => throw new InvalidOperationException("boom")));
        Assert.Equal("boom", custom.Message);

        Assert.Equal(6f, await executor.RunAsync(_ => torch.ones(2, 3).sum().item<float>()));
    }

    [Fact]
    public async Task Cancelling_queued_work_cancels_it_without_running_it()
    {
        using var executor = Cpu();
        using var gate = new ManualResetEventSlim();
        var blocker = executor.RunAsync(_ => gate.Wait(TimeSpan.FromSeconds(30)));
        int ran = 0;
        using var cts = new CancellationTokenSource();
        var queued = Enumerable.Range(0, 10)
            .Select(_ => executor.RunAsync(__ => Interlocked.Increment(ref ran), cancellationToken: cts.Token))
            .ToArray();

        cts.Cancel();
        foreach (var task in queued)
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => task);

        gate.Set();
        Assert.True(await blocker);
        Assert.Equal(1, await executor.RunAsync(_ => 1)); // the queue drained past the cancelled items
        Assert.Equal(0, ran);
    }

    [Fact]
    public async Task Running_work_sees_its_token_and_can_stop()
    {
        using var executor = Cpu();
        using var cts = new CancellationTokenSource();
        using var started = new SemaphoreSlim(0);
        var task = executor.RunAsync(ctx =>
        {
            started.Release();
            while (true)
            {
                ctx.CancellationToken.ThrowIfCancellationRequested();
                Thread.Sleep(1);
            }
#pragma warning disable CS0162 // the loop only ends by cancellation
            return 0;
#pragma warning restore CS0162
        }, cancellationToken: cts.Token);
        await started.WaitAsync(TimeSpan.FromSeconds(10));
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => task);
    }

    [Fact]
    public async Task No_tensor_leaks_over_1000_work_items()
    {
        using var executor = Cpu();
        long Live() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var before = await executor.RunAsync(_ => Live());
        for (int i = 0; i < 1000; i++)
        {
            await executor.RunAsync(ctx =>
            {
                var x = torch.randn(8, 16, device: ctx.Device);
                var w = torch.randn(16, 4, device: ctx.Device);
                return torch.nn.functional.relu(x.mm(w)).mean().item<float>();
            }, i % 2 == 0 ? GradMode.NoGrad : GradMode.Grad);
        }
        var after = await executor.RunAsync(_ => Live());
        Assert.Equal(before, after);
    }

    [Fact]
    public async Task A_returned_tensor_survives_the_work_scope_and_belongs_to_the_caller()
    {
        using var executor = Cpu();
        using var tensor = await executor.RunAsync(_ => torch.arange(5));
        Assert.Equal(new long[] { 0, 1, 2, 3, 4 }, tensor.data<long>().ToArray());
    }

    [Fact]
    public void Bad_options_and_unavailable_devices_are_refused_clearly()
    {
        Assert.Throws<ArgumentException>(() => new DeviceExecutor(new DeviceExecutorOptions { WorkerThreads = 0 }));
        if (!torch.cuda.is_available())
        {
            var e = Assert.Throws<InvalidOperationException>(() => DeviceExecutor.ResolveDevice("cuda"));
            Assert.Contains("CUDA is not available", e.Message);
        }
    }

    [Fact]
    public async Task A_disposed_executor_refuses_new_work()
    {
        var executor = Cpu();
        Assert.Equal(3, await executor.RunAsync(_ => 3));
        executor.Dispose();
        Assert.Throws<ObjectDisposedException>(() => { _ = executor.RunAsync(_ => 1); });
    }

    private static string AllowedCpus() =>
        File.ReadLines("/proc/thread-self/status").First(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal)).Split(':')[1].Trim();

    [Fact]
    public async Task Torch_threads_apply_on_the_executor_threads()
    {
        using var executor = new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu", WorkerThreads = 2, TorchThreads = 1 });
        var seen = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => executor.RunAsync(_ => torch.get_num_threads())));
        Assert.All(seen, n => Assert.Equal(1, n));
    }

    [Fact]
    public async Task Pinned_workers_run_on_the_given_cpu_and_an_impossible_pin_fails_the_constructor()
    {
        using (var pinned = new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu", WorkerThreads = 2, Cpus = [0] }))
        {
            var seen = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => pinned.RunAsync(_ => AllowedCpus())));
            Assert.All(seen, cpus => Assert.Equal("0", cpus));
        }
        if (Environment.ProcessorCount > 1) Assert.NotEqual("0", AllowedCpus()); // only the workers were pinned, not the caller
        Assert.Throws<ArgumentException>(() => new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu", Cpus = [-1] }));
        // a CPU this machine does not have: the kernel refuses, and the constructor says so
        var e = Assert.Throws<System.ComponentModel.Win32Exception>(() => new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu", Cpus = [1000] }));
        Assert.Contains("1000", e.Message);
    }
}
