using System.Text.Json;
using EfficientVlm.Fleet.Tests.Training;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Pruning;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Training;
using TorchSharp;

namespace EfficientVlm.Fleet.Tests.Pruning;

[Collection(TorchCollection.Name)]
public sealed class PruneStageTests(TinyDataFixture fixture) : IClassFixture<TinyDataFixture>, IDisposable
{
    private readonly string _runs = Directory.CreateTempSubdirectory("fleet-prune-").FullName;

    public void Dispose() => Directory.Delete(_runs, recursive: true);

    [Fact]
    public async Task Pruning_a_vqa_model_moves_sparsity_to_the_target_and_the_shrunk_best_model_scores_as_the_masked_one()
    {
        using var executor = new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu" });
        torch.manual_seed(9);
        using var pretrained = new VlmModel(TinyDataFixture.Teacher);
        using var teacher = TaskConversion.ToTask(pretrained, VlmTask.Vqa);
        using var student = TaskConversion.ToTask(StudentInit.FromTeacher(pretrained, TinyDataFixture.Student), VlmTask.Vqa);
        var data = fixture.Data(student.Config);
        using var masks = new PruningMasks(student.Config);
        double start = masks.ExpectedSparsity().item<float>();
        // built inside an executor work item, as `vlm prune` does: it must survive the item's dispose scope
        using var controller = await executor.RunAsync(_ => new SparsityController(masks, target: 0.3, warmupSteps: 10, learningRate: 0.1));
        var (tw, kw) = TaskPruning.Weights(VlmTask.Vqa);
        var dir = Path.Combine(_runs, "vqa");
        double Validate(torch.Device d, ModelGates g) => Evaluation.Vqa(student, data.Vqa("val"), data.Collate, data.AnswerList, d, gates: g);
        var stage = new PruneStage<EfficientVlm.Model.Data.Pipeline.VqaBatchData>(new VqaStage(student, data, 8, 1), masks, controller,
            TaskPruning.Vqa(student, teacher), Validate, tw, kw, dir);
        await new Trainer<EfficientVlm.Model.Data.Pipeline.VqaBatchData>(stage,
            new TrainerOptions { Epochs = 15, LearningRate = 1e-3, CheckpointEvery = 0 }, executor, dir).RunAsync();

        double end = masks.ExpectedSparsity().item<float>();
        Assert.True(Math.Abs(end - 0.3) < Math.Abs(start - 0.3), $"sparsity {start:0.000} -> {end:0.000}, target 0.3");
        // (convergence to within 0.02 is shown by the controller test over a longer run)
        Assert.True(File.Exists(stage.BestMasksFile));

        // the best step's model, shrunk by the best step's masks, scores exactly what the masked model scored
        ShrunkScoresAsMasked(dir, stage.BestMasksFile, data);
    }

    [Fact]
    public async Task Pruning_the_stem_too_moves_its_compute_toward_its_target_and_the_shrunk_model_scores_as_the_masked_one()
    {
        using var executor = new DeviceExecutor(new DeviceExecutorOptions { Device = "cpu" });
        torch.manual_seed(9);
        var conv = TinyDataFixture.Teacher with { Stem = VisionStem.Conv, Positions = VisionPositions.SinCos };
        using var pretrained = new VlmModel(conv);
        using var teacher = TaskConversion.ToTask(pretrained, VlmTask.Vqa);
        using var student = TaskConversion.ToTask(StudentInit.FromTeacher(pretrained, TinyDataFixture.Student with { Stem = VisionStem.Conv, Positions = VisionPositions.SinCos }), VlmTask.Vqa);
        var data = fixture.Data(student.Config);
        using var masks = new PruningMasks(student.Config, stem: true, stemMultiple: 1);
        double start = masks.ExpectedStemSparsity().item<float>();
        using var controller = await executor.RunAsync(_ => new SparsityController(masks, target: 0.3, warmupSteps: 10, learningRate: 0.1, stemTarget: 0.5));
        var (tw, kw) = TaskPruning.Weights(VlmTask.Vqa);
        var dir = Path.Combine(_runs, "vqa-stem");
        double Validate(torch.Device d, ModelGates g) => Evaluation.Vqa(student, data.Vqa("val"), data.Collate, data.AnswerList, d, gates: g);
        var stage = new PruneStage<EfficientVlm.Model.Data.Pipeline.VqaBatchData>(new VqaStage(student, data, 8, 1), masks, controller,
            TaskPruning.Vqa(student, teacher), Validate, tw, kw, dir);
        await new Trainer<EfficientVlm.Model.Data.Pipeline.VqaBatchData>(stage,
            new TrainerOptions { Epochs = 15, LearningRate = 1e-3, CheckpointEvery = 0 }, executor, dir).RunAsync();

        double end = masks.ExpectedStemSparsity().item<float>();
        Assert.True(end > start + 0.2, $"stem sparsity {start:0.000} -> {end:0.000}, target 0.5");
        Assert.NotNull(JsonSerializer.Deserialize<ModelKeep>(File.ReadAllText(stage.BestMasksFile))!.Stem);
        ShrunkScoresAsMasked(dir, stage.BestMasksFile, data);
    }

    /// <summary>The best step's model, shrunk by the best step's masks, is smaller and scores exactly what the masked model scores.</summary>
    private static void ShrunkScoresAsMasked(string dir, string masksFile, TaskData data)
    {
        var keep = JsonSerializer.Deserialize<ModelKeep>(File.ReadAllText(masksFile))!;
        using var best = Checkpoint.Load(Path.Combine(dir, "best"));
        using var shrunk = Shrinker.Shrink(best, keep);
        best.eval();
        shrunk.eval();
        Assert.True(ParameterCounts.Count(shrunk) < ParameterCounts.Count(best));
        if (keep.Stem is { } stem) Assert.Equal(stem.Select(k => k.Length), shrunk.Config.StemWidths);
        var widths = best.Config.StemWidths;
        var gates = new ModelGates
        {
            Vision = keep.Vision!.Select(k => Gate(k, best.Config, Stack.Vision)).ToArray(),
            Text = keep.Text!.Select(k => Gate(k, best.Config, Stack.Text)).ToArray(),
            Fusion = keep.Fusion!.Select(k => Gate(k, best.Config, Stack.Fusion)).ToArray(),
            Decoder = keep.Decoder!.Select(k => Gate(k, best.Config, Stack.Decoder)).ToArray(),
            Stem = keep.Stem?.Select((k, i) => Row(k, widths[i])).ToArray(),
        };
        double masked = Evaluation.Vqa(best, data.Vqa("val"), data.Collate, data.AnswerList, torch.CPU, gates: gates);
        double small = Evaluation.Vqa(shrunk, data.Vqa("val"), data.Collate, data.AnswerList, torch.CPU);
        Assert.Equal(masked, small, 9);
    }

    private static torch.Tensor Row(long[] kept, int size)
    {
        var g = new float[size];
        foreach (var i in kept) g[i] = 1;
        return torch.tensor(g);
    }

    private static LayerGates Gate(LayerKeep keep, VlmConfig config, Stack stack)
    {
        bool cross = stack is Stack.Fusion or Stack.Decoder;
        return new LayerGates(Row(keep.Heads, config.Heads), cross ? Row(keep.CrossHeads, config.Heads) : null, Row(keep.Ffn, config.Intermediate));
    }
}
