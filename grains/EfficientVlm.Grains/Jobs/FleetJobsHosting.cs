using EfficientVlm.Artifacts;
using EfficientVlm.Grains.Serving;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Hosting;

namespace EfficientVlm.Grains.Jobs;

public static class FleetJobsHosting
{
    /// <summary>
    /// What the job owners, runners and inference replicas need: their options, the artefact store, the
    /// silo's disk and model caches, and a reminder minimum
    /// no larger than <see cref="FleetJobOptions.ReminderPeriod"/>. The silo must also have a reminder
    /// service, grain storage <see cref="FleetStorage.GrainStateProvider"/>, a device executor and GPU placement.
    /// </summary>
    public static ISiloBuilder AddFleetJobs(this ISiloBuilder silo, FleetJobOptions options, Func<IServiceProvider, BlobArtifactStore> store,
        ServingOptions? serving = null)
    {
        options.Validate();
        serving ??= new ServingOptions();
        serving.Validate();
        silo.Services.AddSingleton(options);
        silo.Services.AddSingleton(serving);
        silo.Services.AddSingleton<DiskArtifactCache>();
        silo.Services.AddSingleton<ModelCache>();
        silo.Services.AddSingleton(store);
        silo.Configure<ReminderOptions>(o =>
        {
            if (options.ReminderPeriod < o.MinimumReminderPeriod) o.MinimumReminderPeriod = options.ReminderPeriod;
        });
        return silo;
    }
}
