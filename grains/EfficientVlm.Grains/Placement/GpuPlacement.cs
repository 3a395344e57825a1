using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using EfficientVlm.Grains.Abstractions;
using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Runtime.Placement;

namespace EfficientVlm.Grains.Placement;

/// <summary>Places a grain on a silo whose metadata says it has an accelerator (architecture.md decision 3).</summary>
[Serializable, GenerateSerializer, Immutable, SuppressReferenceTracking]
public sealed class GpuPlacementStrategy : PlacementStrategy;

/// <summary>Marks grains that run tensor jobs: they activate only on GPU silos (or, in development, on any silo when allowed).</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class GpuPlacementAttribute() : PlacementAttribute(new GpuPlacementStrategy());

/// <summary>Settings of GPU placement; configuration section <c>Fleet:Placement</c>.</summary>
public sealed record GpuPlacementOptions
{
    public const string SectionName = "Fleet:Placement";

    /// <summary>The silo metadata key that names a silo's accelerator.</summary>
    public const string AcceleratorKey = "accelerator";

    /// <summary>Accelerator values that count as a GPU silo.</summary>
    public IReadOnlyList<string> GpuAccelerators { get; init; } = ["cuda"];

    /// <summary>Development only: when no GPU silo is up, let any silo take GPU work (logged as a warning).</summary>
    public bool AllowCpuSilos { get; init; }

    /// <summary>The request-context key of a placement hint (<see cref="GpuSilos.PlaceOnAsync{T}"/>).</summary>
    public const string PlaceOnKey = "fleet.place-on";
}

/// <summary>
/// Which silos may take GPU work: those whose metadata <c>accelerator</c> is a GPU; with none, and
/// <see cref="GpuPlacementOptions.AllowCpuSilos"/>, any silo (development). The metadata comes from
/// <see cref="ISiloMetadataCache"/> (filled as silos join); the active silos from the membership snapshot.
/// </summary>
public sealed class GpuSilos(ISiloMetadataCache metadata, GpuPlacementOptions options, IClusterMembershipService membership)
{
    public bool IsGpu(SiloAddress silo) =>
        metadata.GetSiloMetadata(silo).Metadata.TryGetValue(GpuPlacementOptions.AcceleratorKey, out var value)
        && options.GpuAccelerators.Contains(value, StringComparer.OrdinalIgnoreCase);

    /// <summary>The eligible ones among <paramref name="candidates"/>; <c>OnCpu</c> when they are CPU silos allowed for development.</summary>
    public (SiloAddress[] Silos, bool OnCpu) Eligible(IEnumerable<SiloAddress> candidates)
    {
        var all = candidates.ToArray();
        var gpu = all.Where(IsGpu).ToArray();
        if (gpu.Length > 0) return (gpu, false);
        return options.AllowCpuSilos ? (all, all.Length > 0) : ([], false);
    }

    /// <summary>The eligible silos among the active members of the cluster, in a stable order.</summary>
    public SiloAddress[] Active() =>
        Eligible(membership.CurrentSnapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.SiloAddress))
            .Silos.OrderBy(s => s.ToString(), StringComparer.Ordinal).ToArray();

    /// <summary>
    /// Places the activation that the calls made inside <paramref name="call"/> create on <paramref name="silo"/>
    /// (when it is eligible; the hint travels in the request context). An activation that already exists stays where it is.
    /// </summary>
    public static async Task<T> PlaceOnAsync<T>(SiloAddress silo, Func<Task<T>> call)
    {
        RequestContext.Set(GpuPlacementOptions.PlaceOnKey, silo);
        try
        {
            return await call();
        }
        finally
        {
            RequestContext.Remove(GpuPlacementOptions.PlaceOnKey);
        }
    }
}

/// <summary>
/// Places a grain on an eligible silo (<see cref="GpuSilos"/>): the one named by the caller's hint
/// (<see cref="GpuSilos.PlaceOnAsync{T}"/>) when that one is eligible, else one at random. With none
/// eligible, throws <see cref="NoGpuSiloException"/>.
/// </summary>
public sealed class GpuPlacementDirector(GpuSilos gpus, GpuPlacementOptions options, ILogger<GpuPlacementDirector> logger)
    : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var (eligible, onCpu) = gpus.Eligible(context.GetCompatibleSilos(target));
        if (eligible.Length == 0)
            throw new NoGpuSiloException(
                $"No GPU silo is in the cluster for {target.GrainIdentity}: start a silo with metadata " +
                $"{GpuPlacementOptions.AcceleratorKey}={string.Join("|", options.GpuAccelerators)} (Orleans:Metadata), " +
                "or set Fleet:Placement:AllowCpuSilos=true for development.");
        if (onCpu)
            logger.LogWarning("No GPU silo is up: {Grain} goes to a CPU silo because Fleet:Placement:AllowCpuSilos is set (development only).",
                target.GrainIdentity);
        if (target.RequestContextData?.GetValueOrDefault(GpuPlacementOptions.PlaceOnKey) is SiloAddress hint && eligible.Contains(hint))
            return Task.FromResult(hint);
        return Task.FromResult(eligible[Random.Shared.Next(eligible.Length)]);
    }
}

public static class GpuPlacementHosting
{
    /// <summary>Registers the GPU placement director and this silo's metadata (accelerator = the executor's device type).</summary>
    public static ISiloBuilder AddGpuPlacement(this ISiloBuilder silo, GpuPlacementOptions options, string accelerator)
    {
        silo.UseSiloMetadata(new Dictionary<string, string> { [GpuPlacementOptions.AcceleratorKey] = accelerator });
        silo.Services.AddSingleton(options);
        silo.Services.AddSingleton<GpuSilos>();
        silo.Services.AddPlacementDirector<GpuPlacementStrategy, GpuPlacementDirector>();
        return silo;
    }
}
