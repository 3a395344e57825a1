using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Pruning;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Fleet.Tests.Model;

[Collection(TorchCollection.Name)]
public sealed class ShrinkTests
{
    private sealed record Outputs(Tensor Image, Tensor Text, Tensor Fused, Tensor Decoded, Tensor Itm, Tensor ImageEmb, Tensor TextEmb);

    private static Outputs Run(VlmModel model, Tensor images, Tensor ids, Tensor padding, ModelGates? gates)
    {
        var image = model.EncodeImage(images, gates).Last;
        var text = model.EncodeText(ids, padding, gates).Last;
        var fused = model.Fuse(text, padding, image, gates).Last;
        var decoded = model.DecodeAnswer(ids, padding, fused, padding, gates).Last;
        return new Outputs(image, text, fused, decoded, model.ItmLogits(fused), model.ImageEmbedding(image), model.TextEmbedding(text));
    }

    private static LayerGates[] RandomGates(VlmConfig config, Stack stack, bool cross, int closeHeadsAt, int closeFfnAt)
    {
        return Enumerable.Range(0, config.Layers(stack)).Select(i =>
        {
            var heads = torch.rand(config.Heads).gt(0.5).to(ScalarType.Float32);
            var ffn = torch.rand(config.Intermediate).gt(0.5).to(ScalarType.Float32);
            if (i == closeHeadsAt) heads = torch.zeros(config.Heads);   // a sub-block with nothing left
            if (i == closeFfnAt) ffn = torch.zeros(config.Intermediate);
            var crossHeads = cross ? torch.rand(config.Heads).gt(0.5).to(ScalarType.Float32) : null;
            return new LayerGates(heads, crossHeads, ffn);
        }).ToArray();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Gated_model_with_random_binary_gates_equals_the_shrunk_model(int seed)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(seed);
        var config = Presets.Tiny with { Task = VlmTask.Vqa }; // VQA carries the answer decoder
        using var model = new VlmModel(config);
        model.eval();
        var gates = new ModelGates
        {
            Vision = RandomGates(config, Stack.Vision, false, closeHeadsAt: 0, closeFfnAt: 1),
            Text = RandomGates(config, Stack.Text, false, closeHeadsAt: -1, closeFfnAt: 0),
            Fusion = RandomGates(config, Stack.Fusion, true, closeHeadsAt: 1, closeFfnAt: -1),
            Decoder = RandomGates(config, Stack.Decoder, true, closeHeadsAt: -1, closeFfnAt: 0),
        };
        var images = torch.randn(2, 3, config.ImageSize, config.ImageSize);
        var ids = torch.randint(5, config.VocabSize, new long[] { 2, 7 });
        var padding = torch.ones(2, 7, dtype: ScalarType.Int64);
        padding[1, TensorIndex.Slice(5)] = torch.tensor(0L);

        var gated = Run(model, images, ids, padding, gates);
        using var shrunk = Shrinker.Shrink(model, ModelKeep.FromGates(gates));
        var small = Run(shrunk, images, ids, padding, null);

        Assert.True(ParameterCounts.Count(shrunk) < ParameterCounts.Count(model));
        Assert.Equal(0, shrunk.Config.Pruned!.Vision![0].Heads);
        Assert.Equal(0, shrunk.Config.Pruned!.Vision![1].FfnWidth);
        foreach (var (a, b, what) in new[]
                 {
                     (gated.Image, small.Image, "vision"), (gated.Text, small.Text, "text"), (gated.Fused, small.Fused, "fusion"),
                     (gated.Decoded, small.Decoded, "decoder"), (gated.Itm, small.Itm, "itm"),
                     (gated.ImageEmb, small.ImageEmb, "itc image"), (gated.TextEmb, small.TextEmb, "itc text"),
                 })
        {
            Assert.Equal(a.shape, b.shape);
            var diff = a.sub(b).abs().max().item<float>();
            Assert.True(diff <= 1e-5f, $"{what}: max |gated - shrunk| = {diff}");
        }
    }

    [Fact]
    public void Nlvr2_doubled_fusion_with_shared_cross_key_value_shrinks_exactly()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(21);
        var config = Presets.Tiny with { Task = VlmTask.Nlvr2 };
        using var model = new VlmModel(config);
        model.eval();
        Assert.Equal(2 * config.FusionLayers, model.Fusion.Count);
        var fusion = RandomGates(config, Stack.Fusion, true, closeHeadsAt: 2, closeFfnAt: 3);
        for (int i = 1; i < fusion.Length; i += 2)  // a pair shares cross key/value: one cross gate row per pair
            fusion[i] = fusion[i] with { CrossHeads = fusion[i - 1].CrossHeads };
        var gates = new ModelGates { Vision = RandomGates(config, Stack.Vision, false, -1, -1), Fusion = fusion };
        var images0 = torch.randn(2, 3, config.ImageSize, config.ImageSize);
        var images1 = torch.randn(2, 3, config.ImageSize, config.ImageSize);
        var ids = torch.randint(5, config.VocabSize, new long[] { 2, 6 });
        var padding = torch.ones(2, 6, dtype: ScalarType.Int64);

        var gated = EfficientVlm.Model.Tasks.Nlvr.Logits(model, images0, images1, ids, padding, gates);
        using var shrunk = Shrinker.Shrink(model, ModelKeep.FromGates(gates));
        var small = EfficientVlm.Model.Tasks.Nlvr.Logits(shrunk, images0, images1, ids, padding);
        Assert.True(gated.sub(small).abs().max().item<float>() <= 1e-5f);

        // A keep set that breaks a shared pair is refused.
        var broken = ModelKeep.FromGates(gates);
        broken.Fusion![1] = broken.Fusion[1] with { CrossHeads = [0] };
        broken.Fusion[0] = broken.Fusion[0] with { CrossHeads = [1] };
        Assert.Throws<ArgumentException>(() => Shrinker.Shrink(model, broken));
    }

    [Fact]
    public void All_gates_closed_makes_every_sub_block_an_identity()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(7);
        var config = Presets.Tiny;
        using var model = new VlmModel(config);
        model.eval();
        var closed = Enumerable.Range(0, config.TextLayers)
            .Select(_ => new LayerGates(torch.zeros(config.Heads), null, torch.zeros(config.Intermediate))).ToArray();
        var ids = torch.randint(5, config.VocabSize, new long[] { 2, 5 });
        var padding = torch.ones(2, 5, dtype: ScalarType.Int64);
        var embedded = model.Embed(ids);
        var output = model.EncodeText(ids, padding, new ModelGates { Text = closed }).Last;
        Assert.True(output.sub(embedded).abs().max().item<float>() == 0f);
    }
}
