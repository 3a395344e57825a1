using TorchSharp;
using EfficientVlm.Model.Runtime;

namespace EfficientVlm.Fleet.Tests;

/// <summary>
/// Every test that touches libtorch belongs to this collection: they run one after another
/// (torch.manual_seed and set_num_threads are process-wide) with one libtorch thread.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TorchCollection : ICollectionFixture<TorchFixture>
{
    public const string Name = "torch";
}

public sealed class TorchFixture
{
    public TorchFixture()
    {
        TorchRuntime.EnsureLoaded();
        torch.set_num_threads(1);
    }
}
