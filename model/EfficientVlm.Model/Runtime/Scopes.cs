using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Runtime;

/// <summary>Helpers for objects that must outlive the dispose scope they were made in.</summary>
public static class Scopes
{
    /// <summary>
    /// Detaches a module's parameters and buffers from the current dispose scope: a model built or
    /// loaded inside a device-executor work item survives the item and belongs to the caller.
    /// </summary>
    public static T Keep<T>(T module) where T : Module
    {
        foreach (var p in module.parameters()) p.DetachFromDisposeScope();
        foreach (var b in module.buffers()) b.DetachFromDisposeScope();
        return module;
    }
}
