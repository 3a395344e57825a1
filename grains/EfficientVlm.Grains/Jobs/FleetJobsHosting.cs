using EfficientVlm.Artifacts;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Hosting;

namespace EfficientVlm.Grains.Jobs;

public static class FleetJobsHosting
{
    /// <summary>
    /// What the job owners and runners need: their options, the artefact store, and a reminder minimum
    /// no larger than <see cref="FleetJobOptions.ReminderPeriod"/>. The silo must also have a reminder
    /// service, grain storage <see cref="FleetStorage.GrainStateProvider"/>, a device executor and GPU placement.
    /// </summary>
    public static ISiloBuilder AddFleetJobs(this ISiloBuilder silo, FleetJobOptions options, Func<IServiceProvider, BlobArtifactStore> store)
    {
        options.Validate();
        silo.Services.AddSingleton(options);
        silo.Services.AddSingleton(store);
        silo.Configure<ReminderOptions>(o =>
        {
            if (options.ReminderPeriod < o.MinimumReminderPeriod) o.MinimumReminderPeriod = options.ReminderPeriod;
        });
        return silo;
    }
}
