using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Fleet.Tests.Model;

[Collection(TorchCollection.Name)]
public sealed class ForwardShapeTests
{
    [Fact]
    public void A_conv_stem_of_any_inner_widths_gives_the_patch_grid_and_the_wrong_count_is_refused()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(52);
        var images = torch.randn(2, 3, 64, 64);
        using var preset = new ConvStem("stem", 128, 8, null);
        using var narrow = new ConvStem("stem", 128, 8, null, [9, 21, 37]);
        Assert.Equal(new long[] { 2, 128, 8, 8 }, preset.Forward(images).shape);
        Assert.Equal(new long[] { 2, 128, 8, 8 }, narrow.Forward(images).shape);
        Assert.Equal(3 * 16 * 9 + 16, preset.parameters().First().numel() + preset.parameters().Skip(1).First().numel()); // conv 0: 3 -> 16
        Assert.Equal(3 * 9 * 9 + 9, narrow.parameters().First().numel() + narrow.parameters().Skip(1).First().numel());    // conv 0: 3 -> 9
        var e = Assert.Throws<ArgumentException>(() => new ConvStem("stem", 128, 8, null, [16, 32]));
        Assert.Contains("3 inner widths", e.Message);
    }

    [Fact]
    public void Every_stack_gives_the_documented_shapes_at_odd_tiny_sizes()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(51);
        var config = Presets.Tiny; // D 32, FFN 37, image 24 / patch 8 -> N = 10
        using var model = new VlmModel(config);
        var images = torch.randn(3, 3, 24, 24);
        var ids = torch.randint(5, config.VocabSize, new long[] { 3, 7 });
        var padding = torch.ones(3, 7, dtype: ScalarType.Int64);

        var image = model.EncodeImage(images, collect: true);
        Assert.Equal(new long[] { 3, 10, 32 }, image.Last.shape);
        Assert.Equal(config.VisionLayers + 1, image.Hidden.Count);
        Assert.Equal(new long[] { 3, 4, 10, 10 }, image.SelfAttentions[0]!.shape);       // (B, nh, N, N)
        var text = model.EncodeText(ids, padding, collect: true);
        Assert.Equal(new long[] { 3, 7, 32 }, text.Last.shape);
        var fused = model.Fuse(text.Last, padding, image.Last, collect: true);
        Assert.Equal(new long[] { 3, 7, 32 }, fused.Last.shape);
        Assert.Equal(new long[] { 3, 4, 7, 10 }, fused.CrossAttentions[0]!.shape);       // (B, nh, T, N)
        Assert.Equal(new long[] { 3, 16 }, model.ImageEmbedding(image.Last).shape);
        Assert.Equal(new long[] { 3, 2 }, model.ItmLogits(fused.Last).shape);
        Assert.Equal(new long[] { 5, 61 }, model.LmLogits(fused.Last.reshape(-1, 32).narrow(0, 0, 5)).shape);
        // attention rows are probabilities
        Assert.True(fused.CrossAttentions[0]!.sum(-1).sub(1).abs().max().item<float>() < 1e-5f);
    }

    [Fact]
    public void Bad_inputs_are_refused_with_a_clear_message()
    {
        using var scope = torch.NewDisposeScope();
        using var model = new VlmModel(Presets.Tiny);
        Assert.Contains("multiples of 8", Assert.Throws<ArgumentException>(() => model.EncodeImage(torch.randn(1, 3, 20, 20))).Message);
        Assert.Contains("positions", Assert.Throws<ArgumentException>(() => model.EncodeImage(torch.randn(1, 3, 32, 32))).Message);
        Assert.Contains("longer than the model's 16 positions", Assert.Throws<ArgumentException>(() =>
            model.EncodeText(torch.ones(1, 17, dtype: ScalarType.Int64), torch.ones(1, 17, dtype: ScalarType.Int64))).Message);
        Assert.Contains("must match", Assert.Throws<ArgumentException>(() =>
            model.EncodeText(torch.ones(1, 5, dtype: ScalarType.Int64), torch.ones(1, 4, dtype: ScalarType.Int64))).Message);
    }

    [Fact]
    public void Training_steps_leak_no_tensors()
    {
        torch.manual_seed(52);
        using var model = new VlmModel(Presets.Tiny);
        model.train();
        var tokens = new SpecialTokens(0, 1, 2, 3, 4, Presets.Tiny.VocabSize);
        PretrainBatch batch;
        using (var setup = torch.NewDisposeScope())
        {
            batch = TinyBatches.Pretrain(Presets.Tiny);
            foreach (var t in new[] { batch.Images, batch.Ids, batch.Padding, batch.ImageIds, batch.Matches }) t.DetachFromDisposeScope();
        }
        using var optimizer = torch.optim.AdamW(model.parameters(), lr: 1e-3);
        void Step()
        {
            using var scope = torch.NewDisposeScope();
            optimizer.zero_grad();
            Pretraining.Run(model, batch, tokens).Total.backward();
            optimizer.step();
        }
        Step(); // optimizer state and gradients exist from here on
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 100; i++) Step();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
