using System.Runtime;

namespace EfficientVlm.Model.Runtime;

/// <summary>
/// Runs a block of native calls with garbage collection held off, where the runtime grants it. TorchSharp's
/// optimisers make temporary Scalars and hand their native handles to libtorch without keeping them alive, so a
/// collection during <c>optimizer.step()</c> can finalise one mid-call ("Expected false to be true ... toFloat",
/// docs/platform.md). With no collection inside the step, nothing the step made is finalised before it returns.
/// Best effort: when the runtime refuses the region, or the allocations of the process outgrow the budget, the
/// block runs as usual.
/// </summary>
public static class NoCollection
{
    /// <summary>Managed bytes the block (and whatever else the process allocates meanwhile) may allocate.</summary>
    public const long DefaultBudget = 16L << 20;

    public static void Run(Action action, long budget = DefaultBudget)
    {
        bool held;
        try { held = GC.TryStartNoGCRegion(budget); }
        catch (InvalidOperationException) { held = false; }   // already inside a region (another caller)
        try { action(); }
        finally
        {
            if (held && GCSettings.LatencyMode == GCLatencyMode.NoGCRegion)
            {
                try { GC.EndNoGCRegion(); }
                catch (InvalidOperationException) { }          // the budget was outgrown: a collection ended the region
            }
        }
    }

    /// <summary>As above, with a result.</summary>
    public static T Run<T>(Func<T> func, long budget = DefaultBudget)
    {
        T result = default!;
        Run(() => { result = func(); }, budget);
        return result;
    }
}
