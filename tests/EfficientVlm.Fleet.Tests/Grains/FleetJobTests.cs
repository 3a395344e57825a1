using Azure.Storage.Blobs;
using EfficientVlm.Artifacts;
using EfficientVlm.Client;
using EfficientVlm.Fleet.Tests.Infrastructure;
using EfficientVlm.Fleet.Tests.Training;
using EfficientVlm.Grains;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Grains.Jobs;
using EfficientVlm.Grains.Placement;
using EfficientVlm.Harness.Processes;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Training;
using Microsoft.Extensions.DependencyInjection;
using Orleans.TestingHost;
using Xunit.Abstractions;

namespace EfficientVlm.Fleet.Tests.Grains;

/// <summary>
/// The fleet's jobs end to end on real Azurite with the tiny preset: a compact model distilled by the
/// fleet, a VQA variant from Pending to Ready, and (with real silo processes) GPU-only placement and a
/// SIGKILLed GPU silo whose pruning job resumes from its checkpoint. In the torch collection: the
/// in-process silo trains with libtorch, and the process test makes its checkpoints here.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class FleetJobTests(AzuriteFixture azurite, TinyDataFixture data, ITestOutputHelper output)
    : IClassFixture<AzuriteFixture>, IClassFixture<TinyDataFixture>, IDisposable
{
    private readonly string _work = Directory.CreateTempSubdirectory("fleet-jobs-").FullName;

    public void Dispose() => Directory.Delete(_work, recursive: true);

    /// <summary>Small budgets: every stage is a few steps on the tiny data (32 VQA questions).</summary>
    private static readonly JobSettings Tiny = new()
    {
        DistillEpochs = 1, FineTuneEpochs = 1, PruneEpochs = 2, PruneWarmupEpochs = 1, BatchSize = 8, CheckpointEvery = 1, EvalLimit = 8,
    };

    private static string Container() => "t" + Guid.NewGuid().ToString("N")[..20];

    /// <summary>A random-initialised tiny teacher (and, optionally, its student) saved as checkpoint folders.</summary>
    private (string Teacher, string Student) Checkpoints()
    {
        using var teacher = new VlmModel(TinyDataFixture.Teacher);
        var teacherDir = Path.Combine(_work, "teacher");
        Checkpoint.Save(teacher, teacherDir);
        using var student = StudentInit.FromTeacher(teacher, EfficientVlm.Model.Config.Presets.Get("tiny")
            with { VocabSize = TinyDataFixture.Teacher.VocabSize, MaxTextLength = TinyDataFixture.Teacher.MaxTextLength });
        var studentDir = Path.Combine(_work, "student");
        Checkpoint.Save(student, studentDir);
        return (teacherDir, studentDir);
    }

    private static async Task<T> Until<T>(Func<Task<T?>> poll, Func<T, bool> done, TimeSpan timeout, string what) where T : class
    {
        var deadline = DateTime.UtcNow + timeout;
        T? last = null;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                last = await poll();
                if (last is not null && done(last)) return last;
            }
            catch (Exception e) when (e is OrleansException or TimeoutException or SiloUnavailableException)
            {
                // a silo is coming or going
            }
            await Task.Delay(200);
        }
        throw new TimeoutException($"{what} within {timeout.TotalSeconds:0} s; last seen: {last}");
    }

    /// <summary>Nothing of a job is left in storage: no job scope, and every blob is named by a manifest.</summary>
    private static async Task AssertNoTemporaryBlobs(BlobArtifactStore store)
    {
        var names = await store.ListAsync();
        Assert.DoesNotContain(names, n => n.StartsWith("jobs/", StringComparison.Ordinal));
        var referenced = new HashSet<string>();
        foreach (var manifest in await store.ListManifestsAsync())
            foreach (var file in (await store.GetManifestAsync(manifest)).Files.Values)
                referenced.Add($"blobs/{file.Hash}");
        Assert.All(names.Where(n => n.StartsWith("blobs/", StringComparison.Ordinal)), n => Assert.Contains(n, referenced));
        Assert.All((await store.ListManifestsAsync()).Select(m => m.Kind), k => Assert.Contains(k, new[] { "dataset", "model", "gallery" }));
    }

    [Fact]
    public async Task In_process_cluster_distils_a_compact_model_and_takes_a_vqa_variant_from_pending_to_ready()
    {
        var container = Container();
        var store = new BlobArtifactStore(new BlobServiceClient(azurite.ConnectionString), container);
        var builder = new InProcessTestClusterBuilder(2); // two silos: a second replica goes to the silo without one
        builder.Options.ServiceId = "svc-" + container; // grain state and reminders of this test only
        builder.ConfigureSilo((siloOptions, silo) =>
        {
            silo.AddAzureBlobGrainStorage(FleetStorage.GrainStateProvider, o => o.BlobServiceClient = new BlobServiceClient(azurite.ConnectionString));
            silo.UseInMemoryReminderService();
            silo.Services.AddSingleton(TimeProvider.System);
            silo.Services.AddSingleton(_ => new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu", TorchThreads = 1 }));
            silo.AddGpuPlacement(new GpuPlacementOptions { AllowCpuSilos = true }, "cpu");
            silo.AddFleetJobs(new FleetJobOptions
            {
                WorkDirectory = Path.Combine(_work, siloOptions.SiloName), WatchdogPeriod = TimeSpan.FromSeconds(1), ReminderPeriod = TimeSpan.FromSeconds(30),
                ProgressInterval = TimeSpan.FromMilliseconds(100),
            }, _ => store, new EfficientVlm.Grains.Serving.ServingOptions
            {
                // scale fast and at the slightest queueing, so the test sees a replica come and go
                MaxReplicas = 2, ScaleInterval = TimeSpan.FromMilliseconds(300),
                ScaleUpQueueDelay = TimeSpan.FromMilliseconds(1), ScaleDownQueueDelay = TimeSpan.FromMilliseconds(0.5),
            });
        });
        await using var cluster = builder.Build();
        await cluster.DeployAsync();
        var registry = cluster.Client.GetGrain<IFleetRegistryGrain>("jobs-" + container);
        var model = "tiny-" + container; // Azure Blob grain state is not keyed by service id: unique ids per test

        var dataset = await store.PutFolderAsync("dataset", data.Root);
        await registry.RegisterDataset(new DatasetRegistration("tiny", dataset.Hash, 1, 1));
        var teacher = await store.PutFolderAsync("model", Checkpoints().Teacher);

        var compact = await registry.RegisterCompactModel(new CompactModelRegistration(model, "tiny", teacher.Hash, null, dataset.Hash, Tiny));
        Assert.Equal(CompactModelStatus.Distilling, compact.Status);
        compact = await Until(() => registry.GetCompactModel(model), m => m.Status != CompactModelStatus.Distilling, TimeSpan.FromMinutes(3), "distillation done");
        Assert.True(compact.Status == CompactModelStatus.Ready, compact.Error);
        Assert.True(await store.ExistsAsync(new ArtifactRef("model", compact.Student!)));

        // Many identical requests at once: one variant.
        var spec = new VariantSpec(FleetTask.Vqa, model, 0.35, dataset.Hash);
        var answers = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => registry.EnsureVariant(spec, Tiny)));
        Assert.All(answers, a => Assert.Equal(spec.VariantId, a.Id));
        Assert.Single(await registry.ListVariants());
        // Before it is ready, an alias cannot point at it.
        Assert.Contains("is not ready", (await Assert.ThrowsAsync<NotReadyException>(() => registry.SetAlias("vqa-default", spec.VariantId))).Message);

        var seen = new HashSet<VariantStage>();
        var ready = await Until(async () =>
        {
            var v = await registry.GetVariant(spec.VariantId);
            if (v is not null) seen.Add(v.Stage);
            return v;
        }, v => v.IsTerminal, TimeSpan.FromMinutes(5), "variant ready");
        foreach (var e in ready.History) output.WriteLine($"{e.At:HH:mm:ss.fff} {e.Stage} {e.What} step {e.Step} on {e.Silo}");
        Assert.True(ready.Stage == VariantStage.Ready, ready.Error);
        Assert.Contains(VariantStage.Prune, seen); // observed in flight, not only at the end

        // Stages in order, each started once and done once.
        string[] stages = ["TeacherFineTune", "Prune", "Shrink", "Evaluate"];
        Assert.Equal(stages, ready.History.Where(e => e.What == "started").Select(e => e.Stage));
        Assert.Equal(stages, ready.History.Where(e => e.What == "done").Select(e => e.Stage));

        var m = ready.Metrics!;
        output.WriteLine($"{m.Metric} {m.Score:0.0} (teacher {m.TeacherScore:0.0}); {m.Parameters:N0} of {m.TeacherParameters:N0} parameters; " +
                         $"speed-up {m.SpeedUpBatch1:0.00}x / {m.SpeedUpBatch32:0.00}x");
        Assert.Equal("vqa_accuracy", m.Metric);
        Assert.InRange(m.Score, 0, 100);
        Assert.True(m.Parameters < m.TeacherParameters, "the shrunk student is smaller than the teacher");
        Assert.Equal(["decoder", "fusion", "text", "vision"], m.KeptHeads.Keys.Order());
        Assert.All(m.KeptNeurons.Values, f => Assert.InRange(f, 0, 1));
        Assert.True(m.KeptNeurons.Values.Any(f => f < 1), "pruning removed FFN neurons");

        // The served model is the shrunk one: loadable, and of the size the metrics say.
        var local = Path.Combine(_work, "shrunk");
        await store.DownloadFolderAsync(new ArtifactRef("model", ready.Model!), local);
        using (var shrunk = Checkpoint.Load(local))
        {
            Assert.NotNull(shrunk.Config.Pruned);
            Assert.Equal(m.Parameters, ParameterCounts.Count(shrunk));
        }

        // Serving: concurrent calls are batched and answer as one-by-one calls do; bad input gets a clear error.
        var images = Directory.GetFiles(Path.Combine(data.Root, "images", "test")).Order().Take(6).Select(File.ReadAllBytes).ToList();
        string[] questions = ["what color is the circle?", "how many shapes are there?", "is there a red square?"];
        var calls = Enumerable.Range(0, 12).Select(i => (Image: images[i % images.Count], Question: questions[i % questions.Length])).ToList();
        var replica = cluster.Client.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(ready.Id, 0));
        var single = new List<string>();
        foreach (var (image, question) in calls) single.Add(await replica.Answer(image, question));
        var before = await replica.Stats();
        var together = await Task.WhenAll(calls.Select(c => replica.Answer(c.Image, c.Question)));
        var after = await replica.Stats();
        output.WriteLine($"one by one: {before.Batches} batches; together: {after.Batches - before.Batches} batches, largest {after.LargestBatch}");
        Assert.Equal(single, together);
        Assert.True(after.LargestBatch > 1, "concurrent calls were batched");
        Assert.True(after.Batches - before.Batches < calls.Count);
        var bad = await Assert.ThrowsAsync<ArgumentException>(() => replica.Answer([1, 2, 3, 4], "what color?"));
        Assert.Contains("image was rejected", bad.Message);
        bad = await Assert.ThrowsAsync<ArgumentException>(() => replica.Answer(images[0], "  "));
        Assert.Contains("question is empty", bad.Message);
        bad = await Assert.ThrowsAsync<ArgumentException>(() => replica.Answer(images[0], new string('a', 600)));
        Assert.Contains("at most 512", bad.Message);
        bad = await Assert.ThrowsAsync<ArgumentException>(() => replica.Verify(images[0], images[1], "there is a circle"));
        Assert.Contains("serves Vqa, not Nlvr2", bad.Message);
        Assert.Equal(single[0], await replica.Answer(calls[0].Image, calls[0].Question)); // still serving
        bad = await Assert.ThrowsAnyAsync<ArgumentException>(() => cluster.Client.GetGrain<IVariantGrain>("no-such-variant").Serving());
        Assert.Contains("No variant 'no-such-variant'", bad.Message);

        // Replicas follow the measured queue delay: sustained load adds one (up to MaxReplicas 2) on the silo that has none,
        // idleness removes it.
        await Until(async () => await registry.Resolve(ready.Id), r => r.Replicas == 1, TimeSpan.FromSeconds(20), "one replica when idle");
        using (var load = new CancellationTokenSource())
        {
            var pressure = Enumerable.Range(0, 16).Select(i => Task.Run(async () =>
            {
                while (!load.IsCancellationRequested) await replica.Answer(images[i % images.Count], questions[0]);
            })).ToList();
            await Until(async () => await registry.Resolve(ready.Id), r => r.Replicas == 2, TimeSpan.FromSeconds(20), "a second replica under load");
            var second = await cluster.Client.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(ready.Id, 1)).Stats();
            Assert.NotEqual((await replica.Stats()).Silo, second.Silo);
            await load.CancelAsync();
            await Task.WhenAll(pressure);
        }
        await Until(async () => await registry.Resolve(ready.Id), r => r.Replicas == 1, TimeSpan.FromSeconds(20), "back to one replica when idle");
        Assert.Equal(single[1], await cluster.Client.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(ready.Id, 1)).Answer(calls[1].Image, calls[1].Question));

        // An alias moves to a second variant once that one is warm; callers of the alias see no failure.
        var spec2 = spec with { TargetSparsity = 0.25 };
        await registry.EnsureVariant(spec2, Tiny);
        var ready2 = await Until(() => registry.GetVariant(spec2.VariantId), v => v.IsTerminal, TimeSpan.FromMinutes(5), "second variant ready");
        Assert.True(ready2.Stage == VariantStage.Ready, ready2.Error);
        Assert.Equal(ready.Id, (await registry.SetAlias("vqa-default", ready.Id)).Variant);
        var served = new System.Collections.Concurrent.ConcurrentBag<string>();
        var failures = new System.Collections.Concurrent.ConcurrentBag<Exception>();
        using var stopCalls = new CancellationTokenSource();
        var callers = Enumerable.Range(0, 4).Select(i => Task.Run(async () =>
        {
            while (!stopCalls.IsCancellationRequested)
            {
                try
                {
                    var info = await registry.Resolve("vqa-default");
                    await cluster.Client.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(info.VariantId, 0)).Answer(images[i], questions[0]);
                    served.Add(info.VariantId);
                }
                catch (Exception e)
                {
                    failures.Add(e);
                }
            }
        })).ToList();
        await Task.Delay(500);
        var moved = await registry.SetAlias("vqa-default", ready2.Id);
        Assert.Equal((ready2.Id, ready.Id), (moved.Variant, moved.Previous));
        await Task.Delay(500);
        await stopCalls.CancelAsync();
        await Task.WhenAll(callers);
        output.WriteLine($"alias calls: {served.Count(v => v == ready.Id)} to the first variant, {served.Count(v => v == ready2.Id)} to the second, {failures.Count} failed");
        Assert.Empty(failures);
        Assert.Contains(ready.Id, served);
        Assert.Contains(ready2.Id, served);
        Assert.Equal(ready2.Id, (await registry.Resolve("vqa-default")).VariantId);
        Assert.Contains("is a variant id", (await Assert.ThrowsAsync<ArgumentException>(() => registry.SetAlias(ready.Id, ready2.Id))).Message);
        Assert.Contains("No variant 'nothing'", (await Assert.ThrowsAsync<UnknownVariantException>(() => registry.SetAlias("vqa-other", "nothing"))).Message);

        // Retrieval: a variant ranks a registered gallery's images for a text and its texts for an image.
        var spec3 = spec with { Task = FleetTask.Retrieval, TargetSparsity = 0.25 };
        await registry.EnsureVariant(spec3, Tiny);
        var retrieval = await Until(() => registry.GetVariant(spec3.VariantId), v => v.IsTerminal, TimeSpan.FromMinutes(5), "retrieval variant ready");
        Assert.True(retrieval.Stage == VariantStage.Ready, retrieval.Error);
        Assert.Equal("r_mean", retrieval.Metrics!.Metric);
        var galleryDir = Path.Combine(_work, "gallery");
        Directory.CreateDirectory(Path.Combine(galleryDir, "images"));
        var galleryFiles = Directory.GetFiles(Path.Combine(data.Root, "images", "test")).Order().Take(5).ToList();
        foreach (var f in galleryFiles) File.Copy(f, Path.Combine(galleryDir, "images", Path.GetFileName(f)));
        string[] galleryTexts = ["a red circle", "two blue squares", "a green triangle above a circle"];
        File.WriteAllText(Path.Combine(galleryDir, "texts.json"), System.Text.Json.JsonSerializer.Serialize(galleryTexts));
        var storedGallery = await store.PutFolderAsync("gallery", galleryDir);
        // replicas look galleries up in the fleet's registry ("default"); the name is unique per run (shared Azurite state)
        var galleryName = "shapes-" + container;
        await cluster.Client.GetGrain<IFleetRegistryGrain>(IFleetRegistryGrain.DefaultKey).RegisterGallery(galleryName, storedGallery.Hash, 5, 3);
        var retriever = cluster.Client.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(retrieval.Id, 0));
        var rankedOne = await retriever.RankImages(galleryName, "a red circle", 3);
        Assert.Equal(3, rankedOne.Count);
        Assert.All(rankedOne, r => Assert.Contains(r.Item, galleryFiles.Select(Path.GetFileName)));
        Assert.True(rankedOne[0].Score >= rankedOne[1].Score && rankedOne[1].Score >= rankedOne[2].Score);
        var rankedMany = await Task.WhenAll(galleryTexts.Select(t => retriever.RankImages(galleryName, t, 3)));
        Assert.Equal(rankedOne.Select(r => r.Item), rankedMany[0].Select(r => r.Item));
        var textsRanked = await retriever.RankTexts(galleryName, images[0], 2);
        Assert.All(textsRanked, r => Assert.Contains(r.Item, galleryTexts));
        Assert.Contains("No gallery 'nowhere'", (await Assert.ThrowsAsync<ArgumentException>(() => retriever.RankImages("nowhere", "a circle", 3))).Message);
        Assert.Contains("k must be", (await Assert.ThrowsAsync<ArgumentException>(() => retriever.RankImages(galleryName, "a circle", 0))).Message);

        // A job that cannot run fails with the reason, keeps it, and registering again retries it.
        var broken = new CompactModelRegistration(model + "-x", "tiny", new string('e', 64), null, dataset.Hash, Tiny);
        await registry.RegisterCompactModel(broken);
        var failed = await Until(() => registry.GetCompactModel(broken.Id), x => x.Status == CompactModelStatus.Failed, TimeSpan.FromMinutes(1), "failure");
        Assert.Contains($"No artifact model/{new string('e', 64)}", failed.Error);
        Assert.Equal(CompactModelStatus.Distilling, (await registry.RegisterCompactModel(broken)).Status);
        failed = await Until(() => registry.GetCompactModel(broken.Id), x => x.Status == CompactModelStatus.Failed, TimeSpan.FromMinutes(1), "second failure");
        Assert.Equal(["started", "retry requested", "started"], failed.History.Where(e => !e.What.StartsWith("failed")).Select(e => e.What));
        Assert.Equal(2, failed.History.Count(e => e.What.StartsWith("failed: No artifact")));

        // Asking again returns the ready variant; nothing restarts.
        var again = await registry.EnsureVariant(spec, Tiny);
        Assert.Equal(VariantStage.Ready, again.Stage);
        Assert.Equal(ready.History.Count, again.History.Count);
        // Its budgets were fixed by the first request: other budgets are refused, each difference named; none at all get it as it is.
        var otherBudgets = await Assert.ThrowsAsync<ArgumentException>(() => registry.EnsureVariant(spec, Tiny with { BatchSize = 16, EvalLimit = null }));
        Assert.Contains("BatchSize 16 (8), EvalLimit all (8)", otherBudgets.Message);
        var asIs = await registry.EnsureVariant(spec, null);
        Assert.Equal((VariantStage.Ready, again.History.Count, Tiny), (asIs.Stage, asIs.History.Count, asIs.Settings));

        // Removing variants: refused while an alias points at one; a ready one goes with its replicas; a running one's job
        // stops; neither leaves job artefacts behind.
        Assert.Contains("behind alias 'vqa-default'", (await Assert.ThrowsAsync<ArgumentException>(() => registry.RemoveVariant(ready2.Id))).Message);
        await registry.RemoveVariant(ready.Id);
        Assert.Null(await registry.GetVariant(ready.Id));
        Assert.DoesNotContain(await registry.ListVariants(), v => v.Id == ready.Id);
        Assert.Contains($"No variant '{ready.Id}'", (await Assert.ThrowsAsync<UnknownVariantException>(() => registry.RemoveVariant(ready.Id))).Message);
        var running = spec with { TargetSparsity = 0.5 };
        await registry.EnsureVariant(running, Tiny);
        var underWay = await Until(() => registry.GetVariant(running.VariantId), v => v.Progress is not null || v.IsTerminal, TimeSpan.FromMinutes(1), "a job under way");
        Assert.False(underWay.IsTerminal, $"removed while its job runs ({underWay.Stage} at step {underWay.Progress?.Step})");
        await registry.RemoveVariant(running.VariantId);
        Assert.Null(await registry.GetVariant(running.VariantId));
        // its runner hears at its next report (every 100 ms here) and stops; what it stored meanwhile is swept
        var scopePrefix = $"jobs/variant.{running.VariantId}/";
        for (int quiet = 0, waited = 0; quiet < 3; waited++)
        {
            Assert.True(waited < 60, "the removed variant's job stopped writing");
            await Task.Delay(1000);
            quiet = (await store.ListAsync()).Any(n => n.StartsWith(scopePrefix, StringComparison.Ordinal)) ? 0 : quiet + 1;
        }

        // Compact models: one that variants are made from is refused; the failed one goes (with the scope its job kept for a retry).
        var inUse = await Assert.ThrowsAsync<ArgumentException>(() => registry.RemoveCompactModel(model));
        Assert.Contains("has variants", inUse.Message);
        Assert.Contains($"'{ready2.Id}'", inUse.Message);
        await registry.RemoveCompactModel(broken.Id);
        Assert.Null(await registry.GetCompactModel(broken.Id));
        Assert.DoesNotContain(await registry.ListCompactModels(), m => m.Id == broken.Id);
        await AssertNoTemporaryBlobs(store);
    }

    [Fact]
    public async Task The_model_cache_evicts_the_least_recently_used_model_that_is_not_in_use()
    {
        var store = new BlobArtifactStore(new BlobServiceClient(azurite.ConnectionString), Container());
        var hashes = new List<string>();
        for (int i = 0; i < 3; i++)
        {
            TorchSharp.torch.manual_seed(i);
            using var model = new VlmModel(TinyDataFixture.Teacher with { Task = EfficientVlm.Model.Config.VlmTask.Nlvr2 });
            var folder = Path.Combine(_work, $"bundle-{i}");
            Checkpoint.Save(model, folder);
            EfficientVlm.Model.Checkpoints.ModelPackage.WriteWords(folder, Path.Combine(data.Root, "vocab.txt"), null);
            hashes.Add((await store.PutFolderAsync("model", folder)).Hash);
        }
        using var executor = new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu", TorchThreads = 1 });
        long oneModel = ParameterCounts.Count(new VlmModel(TinyDataFixture.Teacher with { Task = EfficientVlm.Model.Config.VlmTask.Nlvr2 })) * 4;
        var disk = new DiskArtifactCache(new FleetJobOptions { WorkDirectory = Path.Combine(_work, "cache-silo") },
            Microsoft.Extensions.Logging.Abstractions.NullLogger<DiskArtifactCache>.Instance);
        var cache = new EfficientVlm.Grains.Serving.ModelCache(executor, store, disk,
            new EfficientVlm.Grains.Serving.ServingOptions { CacheBudgetBytes = 2 * oneModel + oneModel / 2 },
            Microsoft.Extensions.Logging.Abstractions.NullLogger<EfficientVlm.Grains.Serving.ModelCache>.Instance);

        (await cache.AcquireAsync(hashes[0])).Dispose();
        (await cache.AcquireAsync(hashes[1])).Dispose();
        (await cache.AcquireAsync(hashes[0])).Dispose();         // 0 is now more recent than 1
        using (var third = await cache.AcquireAsync(hashes[2]))  // over budget: 1 goes
            Assert.Equal([hashes[2], hashes[0]], cache.Stats().Loaded);
        Assert.Equal(1, cache.Stats().Evictions);

        // A model in use is never evicted, even when that leaves the cache over budget for a while.
        using (var busy0 = await cache.AcquireAsync(hashes[0]))
        using (var busy2 = await cache.AcquireAsync(hashes[2]))
        using (var again1 = await cache.AcquireAsync(hashes[1]))
        {
            Assert.Equal(3, cache.Stats().Loaded.Count);
            Assert.Equal(4, cache.Stats().Loads); // 1 was loaded again
        }
        (await cache.AcquireAsync(hashes[1])).Dispose();          // released: now the budget holds again
        Assert.Equal(2, cache.Stats().Loaded.Count);
        Assert.Contains(hashes[1], cache.Stats().Loaded);
    }

    /// <summary>
    /// Steady load for the fault tests: 4 SDK callers asking one question about one image until stopped; an answer
    /// other than <c>expected</c> or an exception counts as lost. Times are since the load started.
    /// </summary>
    private sealed class SteadyLoad
    {
        private readonly System.Diagnostics.Stopwatch _since = System.Diagnostics.Stopwatch.StartNew();
        private readonly CancellationTokenSource _stop = new();
        private List<Task> _callers = [];

        public System.Collections.Concurrent.ConcurrentBag<(TimeSpan Begun, TimeSpan Ended)> Answered { get; } = [];
        public System.Collections.Concurrent.ConcurrentBag<Exception> Lost { get; } = [];
        public TimeSpan Now => _since.Elapsed;

        public static SteadyLoad Start(FleetClient client, string variant, byte[] image, string expected)
        {
            var load = new SteadyLoad();
            load._callers = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
            {
                while (!load._stop.IsCancellationRequested)
                {
                    var begun = load.Now;
                    try
                    {
                        Assert.Equal(expected, await client.AnswerAsync(variant, image, "what color is the circle?"));
                        load.Answered.Add((begun, load.Now));
                    }
                    catch (Exception e)
                    {
                        load.Lost.Add(e);
                    }
                }
            })).ToList();
            return load;
        }

        public async Task StopAsync()
        {
            await _stop.CancelAsync();
            await Task.WhenAll(_callers);
            _stop.Dispose();
        }
    }

    private Dictionary<string, string> SiloSettings(string name, string accelerator, string container) => new()
    {
        ["Fleet__ServiceId"] = "svc-" + container,
        ["Fleet__Silo__Accelerator"] = accelerator,
        ["Fleet__ArtifactContainer"] = container,
        ["Fleet__GrainStateContainer"] = "state-" + container,
        ["Fleet__Jobs__WorkDirectory"] = Path.Combine(_work, name),
        ["Fleet__Jobs__WatchdogPeriod"] = "00:00:01",
        ["Fleet__Jobs__ReminderPeriod"] = "00:00:05",
        ["Fleet__Jobs__ProgressInterval"] = "00:00:00.100",
        ["Fleet__Gateway__ApiKeys__0"] = ApiKey,
        ["Fleet__Gateway__MaxRequestBytes"] = (1024 * 1024).ToString(),
    };

    private const string ApiKey = "test-key-1";

    [Fact]
    public async Task Jobs_run_only_on_the_gpu_silo_and_a_pruning_job_resumes_after_that_silo_is_killed()
    {
        var container = Container();
        var clusterId = "jobs-" + Guid.NewGuid().ToString("N")[..12];
        var serviceId = "svc-" + container; // grain state and reminders of this test only
        var connection = new FleetConnectionOptions
        {
            ClusterId = clusterId, ServiceId = serviceId, StorageConnectionString = azurite.ConnectionString, ArtifactContainer = container,
        };
        var (teacherDir, studentDir) = Checkpoints();
        var model = "tiny-" + container; // Azure Blob grain state is not keyed by service id: unique ids per test

        await using var cpu = await SiloProcess.StartAsync(TestPaths.SiloAssembly, clusterId, azurite.ConnectionString, SiloSettings("cpu", "cpu", container));
        using (var probe = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{cpu.HttpPort}") })
        {
            // ready from the silo's health state, saying no more than that (no addresses, devices or exception text)
            var readiness = await probe.GetAsync("/ready");
            Assert.Equal(System.Net.HttpStatusCode.OK, readiness.StatusCode);
            Assert.Equal("""{"status":"ready"}""", await readiness.Content.ReadAsStringAsync());
        }
        await using var client = await FleetClient.ConnectAsync(connection);
        var dataset = await client.UploadDatasetAsync(data.Root, "tiny");
        var teacher = await client.UploadModelAsync(teacherDir);
        var student = await client.UploadModelAsync(studentDir);
        await client.RegisterCompactModelAsync(new CompactModelRegistration(model, "tiny", teacher, student));

        // Enough pruning steps to kill the silo in the middle: 32 questions / batch 4 = 8 steps per epoch.
        var settings = Tiny with { PruneEpochs = 5, BatchSize = 4 };
        var spec = new VariantSpec(FleetTask.Vqa, model, 0.35, dataset.Hash);
        var refused = await Assert.ThrowsAsync<NoGpuSiloException>(() => client.EnsureVariantAsync(spec, settings));
        Assert.Contains("No GPU silo is in the cluster", refused.Message);
        var waiting = await client.GetVariantAsync(spec.VariantId);
        Assert.Equal(VariantStage.Pending, waiting!.Stage);
        Assert.Contains("No GPU silo", waiting.Error);
        // Asked for over REST while it waits: 202, and where to follow it.
        using (var rest = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{cpu.HttpPort}") })
        using (var ask = new HttpRequestMessage(HttpMethod.Post, "/v1/variants")
               {
                   Content = System.Net.Http.Json.JsonContent.Create(new { task = "vqa", model, target = 0.35, dataset = dataset.Hash }),
                   Headers = { { "X-Api-Key", ApiKey } },
               })
        using (var accepted = await rest.SendAsync(ask))
        {
            Assert.Equal(202, (int)accepted.StatusCode);
            Assert.Equal($"/v1/variants/{spec.VariantId}", accepted.Headers.Location?.ToString());
        }

        // A GPU silo joins: the waiting variant starts by itself (its watchdog), on that silo.
        var gpu = await SiloProcess.StartAsync(TestPaths.SiloAssembly, clusterId, azurite.ConnectionString, SiloSettings("gpu", "cuda", container));
        int killedAt;
        try
        {
            var pruning = await Until(() => client.GetVariantAsync(spec.VariantId),
                v => v.IsTerminal || v.Progress is { Stage: "Prune", Step: >= 3 }, TimeSpan.FromMinutes(4), "pruning under way");
            Assert.False(pruning.IsTerminal, pruning.Error);
            killedAt = pruning.Progress!.Step;
            gpu.Kill();
            output.WriteLine($"GPU silo killed during pruning at step >= {killedAt}");
        }
        finally
        {
            await gpu.DisposeAsync();
        }
        Assert.False((await Until(() => client.GetVariantAsync(spec.VariantId), _ => true, TimeSpan.FromSeconds(60), "variant readable")).IsTerminal);

        await using var gpu2 = await SiloProcess.StartAsync(TestPaths.SiloAssembly, clusterId, azurite.ConnectionString, SiloSettings("gpu2", "cuda", container));
        var ready = await Until(() => client.GetVariantAsync(spec.VariantId), v => v.IsTerminal, TimeSpan.FromMinutes(5), "variant ready after the restart");
        foreach (var e in ready.History) output.WriteLine($"{e.At:HH:mm:ss.fff} {e.Stage} {e.What} step {e.Step} on {e.Silo}");
        Assert.True(ready.Stage == VariantStage.Ready, $"{ready.Error}\n--- gpu2 log ---\n{gpu2.Log}");

        // Every stage ran on a GPU silo, never on the CPU one.
        var runs = ready.History.Where(e => e.What is "started" or "resumed").ToList();
        Assert.DoesNotContain(runs, e => e.Silo!.Contains($":{cpu.SiloPort}:"));
        // The pruning stage resumed from its last uploaded checkpoint, not from step 0, on the new silo.
        var resumed = Assert.Single(ready.History, e => e.Stage == "Prune" && e.What == "resumed");
        var pruneDone = ready.History.Last(e => e.Stage == "Prune" && e.What == "done").Step!.Value;
        // the kill came after step >= killedAt was seen; the job may have stored a checkpoint or two more before it died
        Assert.InRange(resumed.Step!.Value, 1, pruneDone - 1);
        Assert.Contains($":{gpu2.SiloPort}:", resumed.Silo);
        Assert.True(pruneDone > killedAt, "pruning went on after the resume");
        Assert.Single(ready.History, e => e.Stage == "Prune" && e.What == "started");
        await AssertNoTemporaryBlobs(client.Artifacts);
        // The stages gpu2 finished left no run folder behind (their outputs and checkpoints are in storage); its inputs stay cached.
        var gpu2Runs = Path.Combine(_work, "gpu2", "runs");
        Assert.Empty(Directory.Exists(gpu2Runs) ? Directory.EnumerateFileSystemEntries(gpu2Runs) : []);
        Assert.NotEmpty(Directory.EnumerateDirectories(Path.Combine(_work, "gpu2", "cache", "dataset")));
        // The fleet's grain state went to the container it was given, not to Orleans's default shared by every fleet on the account.
        var stateBlobs = new List<string>();
        await foreach (var blob in new BlobServiceClient(azurite.ConnectionString).GetBlobContainerClient("state-" + container).GetBlobsAsync())
            stateBlobs.Add(blob.Name);
        output.WriteLine($"grain state blobs: {string.Join(", ", stateBlobs)}");
        Assert.Contains(stateBlobs, n => n.Contains(spec.VariantId, StringComparison.Ordinal));

        // Serving through the SDK (the replica lands on the GPU silo) and through the REST gateway of the CPU silo.
        var image = File.ReadAllBytes(Directory.GetFiles(Path.Combine(data.Root, "images", "test")).Order().First());
        var answer = await client.AnswerAsync(ready.Id, image, "what color is the circle?");
        var stats = await client.Grains.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(ready.Id, 0)).Stats();
        Assert.Contains($":{gpu2.SiloPort}:", stats.Silo);
        var bad = await Assert.ThrowsAsync<ArgumentException>(() => client.AnswerAsync(ready.Id, [0x89, 0x50, 0x4e, 0x47, 1, 2], "what color?"));
        Assert.Contains("image was rejected", bad.Message);

        // An uploader that may be refused for size sends "Expect: 100-continue" (curl does so for large bodies): the gateway
        // answers 413 from the headers and the body is never sent. Without it Kestrel answers 413 and closes the connection
        // while the client may still be writing, and the client sees a broken pipe instead of the answer.
        using var http = new HttpClient(new SocketsHttpHandler { Expect100ContinueTimeout = TimeSpan.FromSeconds(60) })
            { BaseAddress = new Uri($"http://127.0.0.1:{cpu.HttpPort}") };
        HttpContent Form(byte[] bytes, string question, HttpContent? imagePart = null)
        {
            var form = new MultipartFormDataContent();
            form.Add(imagePart ?? new ByteArrayContent(bytes), "image", "image.png");
            form.Add(new StringContent(question), "question");
            return form;
        }
        async Task<(int Status, string Body)> Post(string path, HttpContent content, string? key = ApiKey, bool expectContinue = false)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = content };
            request.Headers.ExpectContinue = expectContinue;
            if (key is not null) request.Headers.Add("X-Api-Key", key);
            using var response = await http.SendAsync(request);
            return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
        }
        var noKey = await Post($"/v1/variants/{ready.Id}/vqa", Form(image, "what color?"), key: null);
        Assert.Equal(401, noKey.Status);
        Assert.Contains("X-Api-Key", noKey.Body);
        Assert.Equal(401, (await Post($"/v1/variants/{ready.Id}/vqa", Form(image, "what color?"), key: "wrong")).Status);
        var ok = await Post($"/v1/variants/{ready.Id}/vqa", Form(image, "what color is the circle?"));
        Assert.Equal(200, ok.Status);
        Assert.Equal(answer, System.Text.Json.JsonDocument.Parse(ok.Body).RootElement.GetProperty("answer").GetString());
        var corrupt = await Post($"/v1/variants/{ready.Id}/vqa", Form([1, 2, 3, 4, 5], "what color?"));
        Assert.Equal(400, corrupt.Status);
        Assert.Contains("image was rejected", corrupt.Body);
        Assert.Contains("application/problem+json", (await http.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/v1/variants/no-such-variant")
            { Headers = { { "X-Api-Key", ApiKey } } })).Content.Headers.ContentType!.ToString());
        var unknown = await Post("/v1/variants/no-such-variant/vqa", Form(image, "what color?"));
        Assert.Equal(404, unknown.Status);
        Assert.Contains("No variant 'no-such-variant'", unknown.Body);
        var wrongTask = await Post($"/v1/variants/{ready.Id}/caption", new MultipartFormDataContent { { new ByteArrayContent(image), "image", "i.png" } });
        Assert.Equal(400, wrongTask.Status);
        Assert.Contains("serves Vqa, not Captioning", wrongTask.Body);
        // Variants on demand over REST: the same spec gets the ready variant (200); other budgets, an unknown task or an
        // unknown compact model are refused (400) with the reason.
        HttpContent Spec(string task, string model, object? budgets = null) => System.Net.Http.Json.JsonContent.Create(
            new { task, model, target = spec.TargetSparsity, dataset = spec.Dataset, budgets });
        var existing = await Post("/v1/variants", Spec("vqa", spec.CompactModel));
        Assert.Equal(200, existing.Status);
        Assert.Equal(ready.Id, System.Text.Json.JsonDocument.Parse(existing.Body).RootElement.GetProperty("id").GetString());
        var otherBudgets = await Post("/v1/variants", Spec("vqa", spec.CompactModel, new { batchSize = 3 }));
        Assert.Equal(400, otherBudgets.Status);
        Assert.Contains("BatchSize 3 (", otherBudgets.Body);
        var unknownTask = await Post("/v1/variants", Spec("ocr", spec.CompactModel));
        Assert.Equal(400, unknownTask.Status);
        Assert.Contains("Unknown task 'ocr'", unknownTask.Body);
        using (var removeUnknown = new HttpRequestMessage(HttpMethod.Delete, "/v1/variants/no-such-variant") { Headers = { { "X-Api-Key", ApiKey } } })
            Assert.Equal(404, (int)(await http.SendAsync(removeUnknown)).StatusCode);
        var unknownModel = await Post("/v1/variants", Spec("vqa", "no-such-model"));
        Assert.Equal(400, unknownModel.Status);
        Assert.Contains("No compact model 'no-such-model'", unknownModel.Body);
        var hugeImage = new WatchedContent(new byte[2 * 1024 * 1024]);
        var huge = await Post($"/v1/variants/{ready.Id}/vqa", Form([], "what color?", hugeImage), expectContinue: true);
        Assert.Equal(413, huge.Status);
        Assert.False(hugeImage.Sent, "the gateway refused the oversize request from its headers, before its body was sent");
        var openApi = await http.GetStringAsync("/openapi/v1.json");
        Assert.Contains("/v1/variants/{id}/vqa", openApi);
        var metrics = await http.GetStringAsync($"http://127.0.0.1:{gpu2.HttpPort}/metrics"); // each silo exports its own replicas
        Assert.Contains($"fleet_requests_total{{variant=\"{ready.Id}\",task=\"Vqa\",outcome=\"bad_input\"}}", metrics);
        Assert.Contains($"fleet_batch_size_count{{variant=\"{ready.Id}\"}}", metrics);
        Assert.Equal(401, (int)(await http.GetAsync("/dashboard")).StatusCode);

        // Bad-input campaign: 1,100 generated malformed requests, alternately through the SDK and the REST gateway.
        // Each gets a clear error, no silo dies, and the GPU silo's peak memory stays bounded.
        var campaign = MalformedInputs.Generate(image, "what color is the circle?", 1100, seed: 5).ToList();
        var rejections = new Dictionary<string, int>();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < campaign.Count; i++)
        {
            var c = campaign[i];
            var target = c.Variant ?? ready.Id;
            if (i % 2 == 0)
            {
                var e = await Assert.ThrowsAnyAsync<ArgumentException>(() => client.AnswerAsync(target, c.Image, c.Text));
                Assert.False(string.IsNullOrWhiteSpace(e.Message), c.Kind);
            }
            else
            {
                var (status, body) = await Post($"/v1/variants/{Uri.EscapeDataString(target)}/vqa", Form(c.Image, c.Text));
                Assert.True(status is 400 or 404, $"{c.Kind}: HTTP {status} {body}");
                Assert.Contains("\"title\"", body);
            }
            rejections[c.Kind] = rejections.GetValueOrDefault(c.Kind) + 1;
        }
        output.WriteLine($"bad input: {campaign.Count} requests refused in {clock.Elapsed.TotalSeconds:0.0} s: " +
                         string.Join(", ", rejections.Select(kv => $"{kv.Key} {kv.Value}")));
        Assert.Equal(11, rejections.Count);
        Assert.False(cpu.HasExited);
        Assert.False(gpu2.HasExited);
        Assert.Equal(answer, await client.AnswerAsync(ready.Id, image, "what color is the circle?")); // still serving
        long peak = MalformedInputs.PeakRss(gpu2.Pid), peakCpu = MalformedInputs.PeakRss(cpu.Pid);
        output.WriteLine($"peak RSS: GPU silo {peak / 1e6:0} MB, CPU silo (REST gateway) {peakCpu / 1e6:0} MB");
        Assert.True(peak < 3_000_000_000 && peakCpu < 3_000_000_000, "memory stays bounded");

        // A second GPU silo joins; the serving GPU silo is SIGKILLed under steady load: the SDK's retries carry every
        // call over (the replica comes back on the surviving GPU silo); the longest call is the recovery time.
        await using var gpu3 = await SiloProcess.StartAsync(TestPaths.SiloAssembly, clusterId, azurite.ConnectionString, SiloSettings("gpu3", "cuda", container));
        var load = SteadyLoad.Start(client, ready.Id, image, answer);
        await Task.Delay(3000);
        var killedAtTime = load.Now;
        gpu2.Kill();
        await Task.Delay(20000);
        await load.StopAsync();
        var after = load.Answered.Where(a => a.Begun >= killedAtTime).ToList();
        double recovery = load.Answered.Where(a => a.Ended >= killedAtTime).Max(a => (a.Ended - a.Begun).TotalMilliseconds);
        output.WriteLine($"kill under load: {load.Answered.Count} calls answered ({after.Count} after the kill), {load.Lost.Count} failed; " +
                         $"longest call across the kill {recovery / 1000:0.0} s");
        Assert.Empty(load.Lost);
        Assert.NotEmpty(after);
        Assert.Contains($":{gpu3.SiloPort}:", (await client.Grains.GetGrain<IInferenceReplicaGrain>(IInferenceReplicaGrain.Key(ready.Id, 0)).Stats()).Silo);
    }

    [Fact]
    public async Task A_variant_of_a_task_with_its_own_teacher_is_pruned_from_it_without_fine_tuning_the_teacher()
    {
        var container = Container();
        var clusterId = "taskteacher-" + Guid.NewGuid().ToString("N")[..12];
        var connection = new FleetConnectionOptions
        {
            ClusterId = clusterId, ServiceId = "svc-" + container, StorageConnectionString = azurite.ConnectionString, ArtifactContainer = container,
        };
        var (teacherDir, studentDir) = Checkpoints();
        // a teacher already made for VQA, as a shipped package is (here the pre-trained one with the task's heads)
        var vqaTeacherDir = Path.Combine(_work, "vqa-teacher");
        using (var pretrained = Checkpoint.Load(teacherDir))
        using (var vqaTeacher = EfficientVlm.Model.Modules.TaskConversion.ToTask(pretrained, EfficientVlm.Model.Config.VlmTask.Vqa))
            Checkpoint.Save(vqaTeacher, vqaTeacherDir);
        await using var gpu = await SiloProcess.StartAsync(TestPaths.SiloAssembly, clusterId, azurite.ConnectionString, SiloSettings("gpu", "cuda", container));
        await using var client = await FleetClient.ConnectAsync(connection);
        var dataset = await client.UploadDatasetAsync(data.Root, "tiny");
        var model = "tiny-" + container;
        var vqaTeacherHash = await client.UploadModelAsync(vqaTeacherDir);
        var registered = await client.RegisterCompactModelAsync(new CompactModelRegistration(model, "tiny", await client.UploadModelAsync(teacherDir),
            await client.UploadModelAsync(studentDir), TaskTeachers: new() { [FleetTask.Vqa] = vqaTeacherHash }));
        Assert.Equal(vqaTeacherHash, registered.TaskTeachers![FleetTask.Vqa]);

        var spec = new VariantSpec(FleetTask.Vqa, model, 0.35, dataset.Hash);
        await client.EnsureVariantAsync(spec, Tiny);
        var ready = await Until(() => client.GetVariantAsync(spec.VariantId), v => v.IsTerminal, TimeSpan.FromMinutes(5), "variant ready");
        Assert.True(ready.Stage == VariantStage.Ready, ready.Error);
        Assert.Equal(["Prune", "Shrink", "Evaluate"], ready.History.Where(e => e.What == "started").Select(e => e.Stage));
        var refused = await Assert.ThrowsAsync<ArgumentException>(() => client.RegisterCompactModelAsync(new CompactModelRegistration(model + "-x", "tiny",
            vqaTeacherHash, vqaTeacherHash, TaskTeachers: new() { [FleetTask.Nlvr2] = "not-a-hash" })));
        Assert.Contains("nlvr2 teacher model hash", refused.Message);
    }

    [Fact]
    public async Task Serving_goes_on_through_an_azurite_restart_and_storage_recovers_by_itself()
    {
        // Its own Azurite (the shared one serves other tests), restarted in the middle of steady load.
        await using var storage = await AzuriteProcess.StartAsync(TestPaths.RepositoryRoot, Path.Combine(_work, "azurite"));
        var container = Container();
        var clusterId = "restart-" + Guid.NewGuid().ToString("N")[..12];
        var connection = new FleetConnectionOptions
        {
            ClusterId = clusterId, ServiceId = "svc-" + container, StorageConnectionString = storage.ConnectionString, ArtifactContainer = container,
        };
        var (teacherDir, studentDir) = Checkpoints();
        await using var gpu = await SiloProcess.StartAsync(TestPaths.SiloAssembly, clusterId, storage.ConnectionString, SiloSettings("gpu", "cuda", container));
        await using var client = await FleetClient.ConnectAsync(connection);
        var dataset = await client.UploadDatasetAsync(data.Root, "tiny");
        var model = "tiny-" + container;
        await client.RegisterCompactModelAsync(new CompactModelRegistration(model, "tiny", await client.UploadModelAsync(teacherDir),
            await client.UploadModelAsync(studentDir)));
        var spec = new VariantSpec(FleetTask.Vqa, model, 0.35, dataset.Hash);
        await client.EnsureVariantAsync(spec, Tiny);
        var ready = await Until(() => client.GetVariantAsync(spec.VariantId), v => v.IsTerminal, TimeSpan.FromMinutes(5), "variant ready");
        Assert.True(ready.Stage == VariantStage.Ready, ready.Error);

        var image = File.ReadAllBytes(Directory.GetFiles(Path.Combine(data.Root, "images", "test")).Order().First());
        var answer = await client.AnswerAsync(ready.Id, image, "what color is the circle?");
        var load = SteadyLoad.Start(client, ready.Id, image, answer);
        await Task.Delay(2000);
        await storage.StopAsync();
        var down = load.Now;
        // A write with storage down fails with a storage error within seconds (it does not hang the registry).
        var writeBegun = load.Now;
        var refused = await Record.ExceptionAsync(() => client.SetAliasAsync("restart-probe", ready.Id));
        var refusedAfter = load.Now - writeBegun;
        output.WriteLine($"write with storage down: refused after {refusedAfter.TotalSeconds:0.0} s, {refused?.GetType().Name}: {refused?.Message.Split('\n')[0]}");
        Assert.NotNull(refused);
        Assert.Contains("storage", refused.Message, StringComparison.OrdinalIgnoreCase);
        Assert.True(refusedAfter < TimeSpan.FromSeconds(20), $"refused after {refusedAfter.TotalSeconds:0.0} s");
        await Task.Delay(3000);
        Assert.Contains(load.Answered, a => a.Ended > down); // answered with storage down: serving needs no storage once warm
        await storage.StartAgainAsync();
        var up = load.Now;

        // Nobody restarts anything: a grain-state write succeeds again, and a new silo joins through the membership table.
        await Until(async () => await client.SetAliasAsync("restart-probe", ready.Id), _ => true, TimeSpan.FromSeconds(60), "a storage write after the restart");
        var writable = load.Now;
        await using var gpu2 = await SiloProcess.StartAsync(TestPaths.SiloAssembly, clusterId, storage.ConnectionString, SiloSettings("gpu2", "cuda", container));
        await Task.Delay(2000);
        await load.StopAsync();
        output.WriteLine($"Azurite down {down.TotalSeconds:0.0}-{up.TotalSeconds:0.0} s; first write after the restart at +{(writable - up).TotalSeconds:0.0} s; " +
                         $"{load.Answered.Count} calls answered ({load.Answered.Count(a => a.Ended > down && a.Ended < up)} while it was down), " +
                         $"{load.Lost.Count} failed");
        Assert.Empty(load.Lost);
        Assert.Contains(load.Answered, a => a.Ended > writable);
        Assert.False(gpu.HasExited);
        Assert.Contains(await client.ListAliasesAsync(), a => a.Alias == "restart-probe" && a.Variant == ready.Id);
    }
}

/// <summary>Bytes for a request body that records whether the client ever started sending them.</summary>
internal sealed class WatchedContent(byte[] bytes) : ByteArrayContent(bytes)
{
    public bool Sent { get; private set; }

    protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context)
    {
        Sent = true;
        return base.SerializeToStreamAsync(stream, context);
    }

    protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context, CancellationToken cancellationToken)
    {
        Sent = true;
        return base.SerializeToStreamAsync(stream, context, cancellationToken);
    }

    protected override void SerializeToStream(Stream stream, System.Net.TransportContext? context, CancellationToken cancellationToken)
    {
        Sent = true;
        base.SerializeToStream(stream, context, cancellationToken);
    }
}
