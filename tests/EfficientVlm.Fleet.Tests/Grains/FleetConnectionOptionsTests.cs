using EfficientVlm.Grains.Abstractions;

namespace EfficientVlm.Fleet.Tests.Grains;

public sealed class FleetConnectionOptionsTests
{
    [Fact]
    public void The_defaults_are_valid_and_keep_artifacts_and_grain_state_apart()
    {
        var defaults = new FleetConnectionOptions();
        defaults.Validate();
        Assert.Equal("artifacts", defaults.ArtifactContainer);
        Assert.Equal("grainstate", defaults.GrainStateContainer);
    }

    [Theory]
    [InlineData("artifacts", "Upper", "Fleet:GrainStateContainer 'Upper' is not a blob container name")]
    [InlineData("artifacts", "a--b", "Fleet:GrainStateContainer 'a--b' is not a blob container name")]
    [InlineData("x", "grainstate", "Fleet:ArtifactContainer 'x' is not a blob container name")]
    [InlineData("fleet-a", "fleet-a", "are both 'fleet-a'; they must differ")]
    public void Bad_container_names_are_refused_with_the_setting_named(string artifacts, string state, string expected)
    {
        var options = new FleetConnectionOptions { ArtifactContainer = artifacts, GrainStateContainer = state };
        var e = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains(expected, e.Message);
    }
}
