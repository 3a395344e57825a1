using EfficientVlm.Grains;
using EfficientVlm.Model.Runtime;
using Microsoft.Extensions.Options;
using Orleans.Runtime;

namespace EfficientVlm.Silo;

/// <summary>Settings of the readiness check; configuration section <c>Fleet:Health</c>.</summary>
public sealed record HealthOptions
{
    public const string SectionName = "Fleet:Health";

    /// <summary>
    /// The device executor counts as stalled when it has had work this long without starting or finishing any work item.
    /// A whole-split evaluation is one work item of a minute or two on a CPU; the default leaves room for that.
    /// </summary>
    public TimeSpan StallAfter { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>How often the state is refreshed.</summary>
    public TimeSpan Every { get; init; } = TimeSpan.FromSeconds(2);
}

/// <summary>Why a silo is not ready, or that it is.</summary>
public enum Readiness
{
    /// <summary>Not yet checked, or the silo has not yet joined the cluster as active.</summary>
    Joining,

    /// <summary>The device check at start failed (the tensor runtime does not work on this device).</summary>
    DeviceFailed,

    /// <summary>The device executor has had work for <see cref="HealthOptions.StallAfter"/> without progress.</summary>
    DeviceStalled,

    /// <summary>Leaving the cluster.</summary>
    Leaving,

    Ready,
}

/// <summary>
/// The silo's health, kept up to date in the background so that <c>/ready</c> answers at once from it and never queues a
/// probe behind the executor's work (a readiness check that waits on a whole-split evaluation times out and flaps). The
/// device is checked once at start with a small tensor computation; after that, the executor's own progress is watched.
/// </summary>
public sealed class SiloHealth(DeviceExecutor executor, IClusterMembershipService membership, ILocalSiloDetails silo,
    IOptions<HealthOptions> settings, ILogger<SiloHealth> logger) : BackgroundService
{
    private readonly HealthOptions options = settings.Value;
    private volatile bool _deviceChecked;
    private volatile bool _deviceFailed;

    public Readiness State { get; private set; } = Readiness.Joining;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            // the same check as the probe grain's (fleet probe)
            float trace = await DeviceProbeGrain.TraceAsync(executor, stoppingToken);
            _deviceFailed = trace != DeviceProbeGrain.ExpectedTrace;
            if (_deviceFailed)
                logger.LogError("The device check computed {Trace} instead of {Expected} on {Device}.", trace, DeviceProbeGrain.ExpectedTrace, executor.Device);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _deviceFailed = true;
            logger.LogError(e, "The device check failed on {Device}.", executor.Device);
        }
        _deviceChecked = true;
        using var timer = new PeriodicTimer(options.Every);
        do
        {
            State = Assess();
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }

    private Readiness Assess()
    {
        if (_deviceFailed) return Readiness.DeviceFailed;
        if (!_deviceChecked) return Readiness.Joining;
        var status = membership.CurrentSnapshot.GetSiloStatus(silo.SiloAddress);
        if (status is SiloStatus.ShuttingDown or SiloStatus.Stopping or SiloStatus.Dead) return Readiness.Leaving;
        if (status != SiloStatus.Active) return Readiness.Joining;
        return executor.Stalled(DateTime.UtcNow) > options.StallAfter ? Readiness.DeviceStalled : Readiness.Ready;
    }
}
