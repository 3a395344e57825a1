using EfficientVlm.Model.Config;

namespace EfficientVlm.Fleet.Tests.Model;

public sealed class ConfigTests
{
    [Theory]
    [InlineData("paper-teacher")]
    [InlineData("paper-student")]
    [InlineData("demo-teacher")]
    [InlineData("demo")]
    [InlineData("tiny")]
    public void Presets_round_trip_through_json(string name)
    {
        var config = Presets.Get(name);
        Assert.Equal(config, VlmConfig.FromJson(config.ToJson()));
    }

    [Fact]
    public void A_pruned_config_round_trips_with_its_layer_shapes()
    {
        var pruned = Presets.Tiny with
        {
            Task = VlmTask.Nlvr2,
            Pruned = new PrunedShape
            {
                Fusion = [new(1, 2, 0), new(4, 2, 37), new(0, 0, 5), new(3, 0, 1)],
            },
        };
        var json = pruned.Validated().ToJson();
        Assert.Contains("\"task\": \"nlvr2\"", json);
        Assert.Contains("\"ffn_width\": 37", json);
        Assert.Equal(pruned, VlmConfig.FromJson(json));
    }

    [Fact]
    public void A_position_start_round_trips_and_an_old_config_without_it_reads_as_the_default()
    {
        var scaled = (Presets.Tiny with { PositionInit = 0.5 }).Validated();
        Assert.Contains("\"position_init\": 0.5", scaled.ToJson());
        Assert.Equal(scaled, VlmConfig.FromJson(scaled.ToJson()));
        var old = Presets.Tiny.ToJson().Replace("\"position_init\": null,", "");
        Assert.DoesNotContain("position_init", old);
        Assert.Equal(Presets.Tiny, VlmConfig.FromJson(old));
    }

    [Fact]
    public void Inconsistent_configs_are_refused_naming_the_problem()
    {
        Assert.Contains("divisible", Assert.Throws<ArgumentException>(() => (Presets.Tiny with { Hidden = 30 }).Validated()).Message);
        Assert.Contains("multiple of PatchSize", Assert.Throws<ArgumentException>(() => (Presets.Tiny with { ImageSize = 25 }).Validated()).Message);
        Assert.Contains("pruned Vision has 1 layers", Assert.Throws<ArgumentException>(() =>
            (Presets.Tiny with { Pruned = new PrunedShape { Vision = [new(1, 0, 1)] } }).Validated()).Message);
        Assert.Contains("out of range", Assert.Throws<ArgumentException>(() =>
            (Presets.Tiny with { Pruned = new PrunedShape { Vision = [new(5, 0, 1), new(1, 0, 1)] } }).Validated()).Message);
        Assert.Contains("same cross heads", Assert.Throws<ArgumentException>(() =>
            (Presets.Tiny with { Task = VlmTask.Nlvr2, Pruned = new PrunedShape { Fusion = [new(1, 2, 1), new(1, 3, 1), new(1, 1, 1), new(1, 1, 1)] } }).Validated()).Message);
        Assert.Contains("PositionInit", Assert.Throws<ArgumentException>(() => (Presets.Tiny with { PositionInit = 0 }).Validated()).Message);
        Assert.Contains("malformed", Assert.Throws<ArgumentException>(() => VlmConfig.FromJson("{ not json")).Message);
        Assert.Contains("Known: paper-teacher", Assert.Throws<ArgumentException>(() => Presets.Get("huge")).Message);
    }
}
