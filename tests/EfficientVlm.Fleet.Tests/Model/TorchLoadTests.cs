using TorchSharp;
using EfficientVlm.Model.Runtime;

namespace EfficientVlm.Fleet.Tests.Model;

[Collection(TorchCollection.Name)]
public sealed class TorchLoadTests
{
    [Fact]
    public void Libtorch_loads_and_multiplies_matrices()
    {
        Assert.Contains("TorchSharp", TorchRuntime.EnsureLoaded());
        using var scope = torch.NewDisposeScope();
        // [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]]
        var a = torch.tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2);
        var b = torch.tensor(new float[] { 5, 6, 7, 8 }).reshape(2, 2);
        var c = a.mm(b).data<float>().ToArray();
        Assert.Equal(new float[] { 19, 22, 43, 50 }, c);
    }

    [Fact]
    public void Autograd_computes_a_known_gradient()
    {
        using var scope = torch.NewDisposeScope();
        // d/dx sum(x^3) = 3 x^2
        var x = torch.tensor(new float[] { 1, 2, 3 }, requires_grad: true);
        x.pow(3).sum().backward();
        Assert.Equal(new float[] { 3, 12, 27 }, x.grad!.data<float>().ToArray());
    }

    [Fact]
    public void Held_scalars_are_one_per_value_and_still_valid_after_collections()
    {
        TorchRuntime.EnsureLoaded();
        using var scope = torch.NewDisposeScope();
        var scale = Scalars.Of(0.125);
        Assert.Same(scale, Scalars.Of(0.125));
        Assert.Same(Scalars.One, Scalars.Of(1.0));
        scale = null!;
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        // a finalised Scalar would free its native value; the held one still works
        var x = torch.tensor(new float[] { 8, 16 });
        Assert.Equal(new float[] { 2, 3 }, x.mul(Scalars.Of(0.125)).add(Scalars.One, Scalars.One).data<float>().ToArray());
    }

    [Fact]
    public void A_block_run_without_collections_gives_its_result_and_leaves_the_region_even_when_it_outgrows_it()
    {
        Assert.Equal(42, NoCollection.Run(() => new byte[24].Length + 18));
        Assert.NotEqual(System.Runtime.GCLatencyMode.NoGCRegion, System.Runtime.GCSettings.LatencyMode);

        // 64 MB allocated inside a 1 MB budget: the runtime collects, the region ends, the block still completes
        long total = NoCollection.Run(() => Enumerable.Range(0, 64).Sum(_ => (long)new byte[1 << 20].Length), budget: 1 << 20);
        Assert.Equal(64L << 20, total);
        Assert.NotEqual(System.Runtime.GCLatencyMode.NoGCRegion, System.Runtime.GCSettings.LatencyMode);
        Assert.Throws<InvalidOperationException>(() => NoCollection.Run(() => throw new InvalidOperationException("from the block")));
        Assert.NotEqual(System.Runtime.GCLatencyMode.NoGCRegion, System.Runtime.GCSettings.LatencyMode);
    }
}
