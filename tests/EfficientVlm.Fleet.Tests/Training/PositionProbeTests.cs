using EfficientVlm.Model.Config;
using EfficientVlm.Model.Data.ShapesWorld;
using EfficientVlm.Model.Images;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Training;
using TorchSharp;

namespace EfficientVlm.Fleet.Tests.Training;

[Collection(TorchCollection.Name)]
public sealed class PositionProbeTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("fleet-probe-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public void Patches_map_to_the_cell_their_centre_is_in()
    {
        // 8 x 8 patches over a 3 x 3 grid: rows and columns 0-2 are the first third, 3-4 the second, 5-7 the last
        int[] thirds = [0, 0, 0, 1, 1, 2, 2, 2];
        for (int p = 0; p < 64; p++) Assert.Equal(thirds[p / 8] * 3 + thirds[p % 8], PositionProbe.CellOfPatch(p, 8));
        Assert.Equal(Enumerable.Range(0, 9), Enumerable.Range(0, 9).Select(p => PositionProbe.CellOfPatch(p, 3)));
    }

    [Fact]
    public void Object_patches_are_found_in_the_objects_cells_only()
    {
        static SceneObject At(Colour colour, int row, int column) =>
            new(Shape.Square, colour, ObjectSize.Large, row, column, (column + 0.5) * Scene.Cell, (row + 0.5) * Scene.Cell, 15);
        var scene = new Scene([At(Colour.Red, 0, 0), At(Colour.Blue, 2, 2)]);
        using var image = Renderer.Render(scene, new Random(1));
        using var pixels = torch.tensor(ImageLoader.ToTensorData(image, 64)).view(1, 3, 64, 64);
        using var found = PositionProbe.ObjectPatches(pixels, 8);
        var cells = found[0].data<bool>().ToArray().Select((hit, p) => (hit, p)).Where(x => x.hit)
            .Select(x => PositionProbe.CellOfPatch(x.p, 8)).ToList();
        Assert.Contains(0, cells);
        Assert.Contains(8, cells);
        Assert.All(cells, c => Assert.True(c is 0 or 8, $"patch flagged in cell {c}"));
    }

    [Fact]
    public void Linear_probe_finds_a_linearly_encoded_label_and_not_a_random_one_and_keeps_the_callers_rng()
    {
        torch.manual_seed(5);
        using var labels = torch.randint(0, 3, [900]);
        using var signal = torch.nn.functional.one_hot(labels, 3).to(torch.float32).mul(2).add(torch.randn(900, 3).mul(0.5));
        using var features = torch.cat([signal, torch.randn(900, 13)], 1);
        using var noise = torch.randint(0, 3, [900]);
        using var before = torch.get_rng_state();

        var encoded = LinearProbe.Fit("encoded", features[..600], labels[..600], features[600..], labels[600..], 3);
        var random = LinearProbe.Fit("random", features[..600], noise[..600], features[600..], noise[600..], 3);

        Assert.Equal(300, encoded.Count);
        Assert.InRange(encoded.Accuracy, 95, 100);
        Assert.InRange(random.Accuracy, 0, random.Majority + 10);
        Assert.Equal(encoded, LinearProbe.Fit("encoded", features[..600], labels[..600], features[600..], labels[600..], 3));
        using var after = torch.get_rng_state();
        Assert.True(before.eq(after).all().item<bool>(), "the probe changed the caller's RNG state");
    }

    // An untrained encoder: with its positional embedding the patch tokens say which cell they are in (the
    // background patches are alike but for it); with the embedding zeroed they cannot. With the fusion's
    // cross-attention queries zeroed, attention is uniform, and the measured shares are the uniform ones.
    [Fact]
    public void Patch_tokens_carry_their_cell_through_the_positional_embedding_and_uniform_attention_measures_uniform()
    {
        Generator.Generate(_root, 3, new GeneratorSizes { TrainImages = 48, EvalImages = 24, TrainPairs = 4, EvalPairs = 4, QuestionsPerImage = 6 });
        torch.manual_seed(2);
        var config = Presets.Tiny with { VocabSize = 256, MaxTextLength = 32 };
        using var model = new VlmModel(config);
        model.eval();
        var data = new TaskData(_root, config);

        var with = PositionProbe.Run(model, data, 200, 100, torch.CPU);
        Assert.Equal(3, with.Probes.Count);
        Assert.All(with.Probes, s => Assert.True(s.Count > 0, $"{s.Features}: nothing to score"));
        Assert.InRange(with.Probes[0].Accuracy, 90, 100);
        Assert.Equal(config.FusionLayers, with.Attention.Count);
        Assert.All(with.Attention, a => Assert.InRange(a.Target, 0, a.Objects));

        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (torch.no_grad())
        {
            parameters["vision.positional_embedding"].zero_();
            foreach (var (name, p) in parameters)
                if (name.StartsWith("fusion.") && name.Contains(".cross_attn.query.")) p.zero_();
        }
        var without = PositionProbe.Run(model, data, 200, 100, torch.CPU);
        Assert.InRange(without.Probes[0].Accuracy, 0, without.Probes[0].Majority + 15);
        foreach (var a in without.Attention)
        {
            Assert.InRange(a.UniformTarget, 0.1, a.UniformObjects);
            Assert.Equal(a.UniformTarget, a.Target, 1e-3);
            Assert.Equal(a.UniformObjects, a.Objects, 1e-3);
            Assert.Equal(a.UniformClassToken, a.ClassToken, 1e-3);
        }
    }

    [Fact]
    public void Nlvr2_models_are_refused()
    {
        Generator.Generate(_root, 3, new GeneratorSizes { TrainImages = 4, EvalImages = 4, TrainPairs = 2, EvalPairs = 2 });
        using var model = new VlmModel(Presets.Tiny with { Task = VlmTask.Nlvr2, VocabSize = 256, MaxTextLength = 32 });
        var error = Assert.Throws<ArgumentException>(() => PositionProbe.Run(model, new TaskData(_root, model.Config), 1, 1, torch.CPU));
        Assert.Contains("NLVR2", error.Message);
    }
}
