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
}

/// <summary>
/// Picks, among the compatible silos, one whose metadata <c>accelerator</c> is a GPU (at random among
/// them); the metadata comes from <see cref="ISiloMetadataCache"/> (filled as silos join). With none,
/// throws <see cref="NoGpuSiloException"/> unless <see cref="GpuPlacementOptions.AllowCpuSilos"/>.
/// </summary>
public sealed class GpuPlacementDirector(ISiloMetadataCache metadata, GpuPlacementOptions options, ILogger<GpuPlacementDirector> logger)
    : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var silos = context.GetCompatibleSilos(target);
        var gpu = silos.Where(IsGpu).ToArray();
        if (gpu.Length > 0) return Task.FromResult(gpu[Random.Shared.Next(gpu.Length)]);
        if (options.AllowCpuSilos && silos.Length > 0)
        {
            logger.LogWarning("No GPU silo is up: {Grain} goes to a CPU silo because Fleet:Placement:AllowCpuSilos is set (development only).",
                target.GrainIdentity);
            return Task.FromResult(silos[Random.Shared.Next(silos.Length)]);
        }
        throw new NoGpuSiloException(
            $"No GPU silo is in the cluster for {target.GrainIdentity}: start a silo with metadata " +
            $"{GpuPlacementOptions.AcceleratorKey}={string.Join("|", options.GpuAccelerators)} (Orleans:Metadata), " +
            "or set Fleet:Placement:AllowCpuSilos=true for development.");
    }

    private bool IsGpu(SiloAddress silo) =>
        metadata.GetSiloMetadata(silo).Metadata.TryGetValue(GpuPlacementOptions.AcceleratorKey, out var value)
        && options.GpuAccelerators.Contains(value, StringComparer.OrdinalIgnoreCase);
}

public static class GpuPlacementHosting
{
    /// <summary>Registers the GPU placement director and this silo's metadata (accelerator = the executor's device type).</summary>
    public static ISiloBuilder AddGpuPlacement(this ISiloBuilder silo, GpuPlacementOptions options, string accelerator)
    {
        silo.UseSiloMetadata(new Dictionary<string, string> { [GpuPlacementOptions.AcceleratorKey] = accelerator });
        silo.Services.AddSingleton(options);
        silo.Services.AddPlacementDirector<GpuPlacementStrategy, GpuPlacementDirector>();
        return silo;
    }
}
