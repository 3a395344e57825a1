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
}
