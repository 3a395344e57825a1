using EfficientVlm.Common;

namespace EfficientVlm.Fleet.Tests;

public sealed class QuantilesTests
{
    [Fact]
    public void Nearest_rank_takes_the_smallest_value_with_the_share_at_or_below_it()
    {
        double[] sorted = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
        Assert.Equal(50, Quantiles.NearestRank(sorted, 0.5));
        Assert.Equal(100, Quantiles.NearestRank(sorted, 0.99));
        Assert.Equal(10, Quantiles.NearestRank(sorted, 0));
        Assert.Equal(100, Quantiles.NearestRank(sorted, 1));
        Assert.Equal(60, Quantiles.NearestRank(sorted, 0.51));
        Assert.Equal(7, Quantiles.NearestRank([7], 0.99));
        Assert.True(double.IsNaN(Quantiles.NearestRank([], 0.5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Quantiles.NearestRank(sorted, 50));
    }

    [Fact]
    public void Median_sorts_skips_non_finite_values_and_averages_the_middle_pair()
    {
        Assert.Equal(3, Quantiles.Median([5, 1, 3]));
        Assert.Equal(2.5, Quantiles.Median([4, 1, 3, 2]));
        Assert.Equal(2, Quantiles.Median([double.NaN, 3, 1, double.PositiveInfinity]));
        Assert.True(double.IsNaN(Quantiles.Median([double.NaN])));
    }
}
