using EfficientVlm.Fleet.Tests.Training;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Jobs;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Objectives;
using EfficientVlm.Model.Pruning;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Fleet.Tests.Pruning;

/// <summary>KD during pruning (every stream, fusion cross-attention maps included) and VQA's frozen masks.</summary>
[Collection(TorchCollection.Name)]
public sealed class PruningKdTests(TinyDataFixture fixture) : IClassFixture<TinyDataFixture>, IDisposable
{
    private readonly string _runs = Directory.CreateTempSubdirectory("fleet-prune-kd-").FullName;

    public void Dispose() => Directory.Delete(_runs, recursive: true);

    private static readonly string[] Streams = ["kd_fusion", "kd_logits", "kd_text", "kd_vision"];

    /// <summary>One training batch of <paramref name="task"/> through the task's pruning losses (no gates closed).</summary>
    private PruneLosses Losses(VlmTask task, VlmModel student, VlmModel teacher)
    {
        var data = fixture.Data(student.Config);
        var open = new ModelGates();
        return task switch
        {
            VlmTask.Vqa => TaskPruning.Vqa(student, teacher)(new VqaStage(student, data, 6, 1).Batches(0, 0).First(), torch.CPU, open),
            VlmTask.Nlvr2 => TaskPruning.Nlvr(student, teacher)(new NlvrStage(student, data, 6, 1).Batches(0, 0).First(), torch.CPU, open),
            VlmTask.Retrieval => TaskPruning.Retrieval(student, teacher, data.Tokenizer.Special)(
                new RetrievalStage(student, data, 6, 1).Batches(0, 0).First(), torch.CPU, open),
            _ => TaskPruning.Captioning(student, teacher)(new CaptionStage(student, data, 6, 1).Batches(0, 0).First(), torch.CPU, open),
        };
    }

    [Theory]
    [InlineData(VlmTask.Vqa)]
    [InlineData(VlmTask.Nlvr2)]
    [InlineData(VlmTask.Retrieval)]
    [InlineData(VlmTask.Captioning)]
    public void Pruning_kd_covers_every_stream_is_zero_for_the_teacher_itself_and_positive_for_a_student(VlmTask task)
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(12);
        using var pretrained = new VlmModel(TinyDataFixture.Teacher);
        using var teacher = TaskConversion.ToTask(pretrained, task);
        string[] expected = task == VlmTask.Vqa ? [.. Streams.Append("kd_decoder").Order()] : Streams;

        // the teacher against itself (identity mapping): every term is zero
        var same = Losses(task, teacher, teacher);
        Assert.Equal(expected, same.KdParts.Keys.Order());
        foreach (var (name, value) in same.KdParts) Assert.True(Math.Abs(value.item<float>()) < 1e-6, $"{name} = {value.item<float>()}");
        Assert.True(Math.Abs(same.Kd.item<float>()) < 1e-5);

        // a student of half the depth (layer mapping 2:1): every term is positive, and the total is their sum
        using var student = TaskConversion.ToTask(StudentInit.FromTeacher(pretrained, TinyDataFixture.Student), task);
        var other = Losses(task, student, teacher);
        Assert.All(other.KdParts, p => Assert.True(p.Value.item<float>() > 0, $"{p.Key} should be positive"));
        Assert.Equal(other.KdParts.Values.Sum(v => v.item<float>()), other.Kd.item<float>(), 4);
    }

    [Fact]
    public void Fusion_kd_distils_the_cross_attention_maps()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(13);
        using var pretrained = new VlmModel(TinyDataFixture.Teacher);
        using var teacher = TaskConversion.ToTask(pretrained, VlmTask.Captioning);
        teacher.eval();
        var data = fixture.Data(teacher.Config);
        var batch = new CaptionStage(teacher, data, 6, 1).Batches(0, 0).First();
        var (images, ids, padding) = batch.ToTensors(torch.CPU);
        var vision = teacher.EncodeImage(images, collect: true);
        var (_, text, fusion) = EfficientVlm.Model.Tasks.Captioning.NextTokenLogitsStreams(teacher, vision.Last, ids, padding);
        Assert.All(fusion.CrossAttentions, map => Assert.NotNull(map));

        // the same streams, except that every cross-attention map is spread evenly over the image tokens
        var flattened = new EncoderOutput { Last = fusion.Last };
        flattened.Hidden.AddRange(fusion.Hidden);
        flattened.SelfAttentions.AddRange(fusion.SelfAttentions);
        flattened.CrossAttentions.AddRange(fusion.CrossAttentions.Select(m => (Tensor?)torch.full_like(m!, 1.0 / m!.shape[^1])));
        var original = new TaskStreams(vision, text, padding, fusion, padding);
        var (_, parts) = Distillation.StreamKd(original with { Fusion = flattened }, original);
        Assert.True(parts["kd_fusion"].item<float>() > 1e-4, $"kd_fusion = {parts["kd_fusion"].item<float>()}");
        Assert.Equal(0f, parts["kd_vision"].item<float>());
        Assert.Equal(0f, parts["kd_text"].item<float>());
    }

    [Fact]
    public void Attention_maps_map_to_the_last_teacher_layer_of_each_block_and_nlvr2_layers_keep_their_image()
    {
        // plain stacks, teacher twice as deep: student layer i <-> teacher layer 2i + 1
        Assert.Equal([1, 3, 5], new[] { 0, 1, 2 }.Select(i => Distillation.AttentionTeacherLayer(i, 2)));
        // identity mapping
        Assert.Equal([0, 1, 2], new[] { 0, 1, 2 }.Select(i => Distillation.AttentionTeacherLayer(i, 1)));
        // NLVR2 fusion (layer 2j: image 0, 2j+1: image 1): blocks map 0 -> 1, 1 -> 3, and each layer keeps its image
        var nlvr = new[] { 0, 1, 2, 3 }.Select(i => Distillation.AttentionTeacherLayer(i, 2, group: 2)).ToArray();
        Assert.Equal([2, 3, 6, 7], nlvr);
        Assert.All(nlvr.Select((t, i) => (t, i)), p => Assert.Equal(p.i % 2, p.t % 2));
    }

    [Fact]
    public void Masks_freeze_only_in_the_last_epochs_and_only_after_the_warm_up_by_default_for_vqa_alone()
    {
        var settings = new PipelineSettings { PruneEpochs = 4 };
        Assert.Equal(30, Pipeline.FreezeMasksAtStep(VlmTask.Vqa, settings, batchesPerEpoch: 10, warmupSteps: 10));
        Assert.Null(Pipeline.FreezeMasksAtStep(VlmTask.Nlvr2, settings, 10, 10));                                   // the method: VQA only
        Assert.Equal(20, Pipeline.FreezeMasksAtStep(VlmTask.Nlvr2, settings with { FrozenMaskEpochs = 2 }, 10, 10)); // asked for
        Assert.Null(Pipeline.FreezeMasksAtStep(VlmTask.Vqa, settings with { FrozenMaskEpochs = 0 }, 10, 10));
        Assert.Null(Pipeline.FreezeMasksAtStep(VlmTask.Vqa, settings with { PruneEpochs = 1 }, 10, 10)); // no room after the warm-up
        Assert.Throws<ArgumentException>(() => (settings with { FrozenMaskEpochs = 5 }).Validate());
    }

    /// <summary>
    /// A tiny VQA pruning run that may freeze its masks from step <paramref name="freezeAt"/>; returns its masks, lambdas,
    /// a weight, each step's frozen flag and the freeze step. The gates start at an expected sparsity of about 0.05 and,
    /// in 16 steps, stay near it.
    /// </summary>
    private async Task<(float[] LogAlpha, double Lambda1, float[] Weight, SortedDictionary<int, double> Frozen, int? FrozenSince)> PruneVqa(
        string name, int freezeAt, int? stopAfter, double target = 0.05)
    {
        using var executor = new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu" });
        var frozen = new SortedDictionary<int, double>();
        torch.manual_seed(21);
        using var pretrained = new VlmModel(TinyDataFixture.Teacher);
        using var teacher = TaskConversion.ToTask(pretrained, VlmTask.Vqa);
        using var student = TaskConversion.ToTask(StudentInit.FromTeacher(pretrained, TinyDataFixture.Student), VlmTask.Vqa);
        var data = fixture.Data(student.Config);
        using var masks = new PruningMasks(student.Config);
        using var controller = await executor.RunAsync(_ => new SparsityController(masks, target, warmupSteps: 4, learningRate: 0.1));
        var (tw, kw) = TaskPruning.Weights(VlmTask.Vqa);
        var dir = Path.Combine(_runs, name);
        var stage = new PruneStage<EfficientVlm.Model.Data.Pipeline.VqaBatchData>(new VqaStage(student, data, 8, 1), masks, controller,
            TaskPruning.Vqa(student, teacher), (d, g) => 0, tw, kw, dir, freezeMasksAtStep: freezeAt);
        Assert.Equal(4, stage.BatchesPerEpoch);
        await new Trainer<EfficientVlm.Model.Data.Pipeline.VqaBatchData>(stage,
                new TrainerOptions { Epochs = 4, LearningRate = 1e-3, CheckpointEvery = 0 }, executor, dir)
            .RunAsync(new CallbackProgress<TrainingProgress>(p => frozen[p.Step] = p.Parts["frozen"]), stopAfterSteps: stopAfter);
        var logAlpha = torch.cat(masks.parameters().Select(p => p.detach().flatten()).ToArray()).data<float>().ToArray();
        var weight = student.parameters().First(p => p.shape.Length == 2).detach().flatten().data<float>().ToArray();
        return (logAlpha, controller.Lambda1, weight, frozen, stage.FrozenSince);
    }

    [Fact]
    public async Task Frozen_masks_and_lambdas_stop_moving_while_the_weights_keep_learning()
    {
        var full = await PruneVqa("full", freezeAt: 8, stopAfter: null);
        // it froze at or after step 8 (0-based), in the target window, and stayed frozen
        int since = Assert.IsType<int>(full.FrozenSince);
        Assert.InRange(since, 8, 14);
        Assert.All(full.Frozen, kv => Assert.Equal(kv.Key > since ? 1 : 0, kv.Value)); // progress step k reports 0-based step k - 1

        // the same seeded run stopped just before the freeze: the masks and lambdas it ends with are bitwise those of the
        // full run, which therefore moved no gate after freezing, while its weights went on learning
        var atFreeze = await PruneVqa("stopped", freezeAt: 8, stopAfter: since);
        Assert.Null(atFreeze.FrozenSince);
        Assert.Equal(atFreeze.LogAlpha, full.LogAlpha);
        Assert.Equal(atFreeze.Lambda1, full.Lambda1);
        Assert.NotEqual(atFreeze.Weight, full.Weight);

        // a run that never gets within 0.02 of its target does not freeze its masks on a miss
        var off = await PruneVqa("off-target", freezeAt: 8, stopAfter: null, target: 0.3);
        Assert.Null(off.FrozenSince);
        Assert.All(off.Frozen, kv => Assert.Equal(0, kv.Value));
    }
}
