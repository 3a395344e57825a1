using System.Net;
using Azure.Data.Tables;
using Azure.Storage.Blobs;
using EfficientVlm.Artifacts;
using EfficientVlm.Grains;
using EfficientVlm.Grains.Jobs;
using EfficientVlm.Grains.Serving;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Grains.Placement;
using EfficientVlm.Model.Runtime;
using Orleans.Configuration;

namespace EfficientVlm.Silo;

/// <summary>The wiring of a fleet silo, kept out of Program.cs.</summary>
public static class FleetSiloHosting
{
    /// <summary>Binds and validates the options, then adds the device executor and the Orleans silo.</summary>
    public static WebApplicationBuilder AddFleetSilo(this WebApplicationBuilder builder)
    {
        var connection = builder.Configuration.GetSection(FleetConnectionOptions.SectionName).Get<FleetConnectionOptions>()
                         ?? new FleetConnectionOptions();
        var silo = builder.Configuration.GetSection(FleetSiloOptions.SectionName).Get<FleetSiloOptions>()
                   ?? new FleetSiloOptions();
        connection.Validate();
        silo.Validate();
        builder.Services.AddSingleton(connection);
        builder.Services.AddSingleton(silo);
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(_ => new DeviceExecutor(silo.Executor));
        builder.Services.AddOptions<HealthOptions>().Bind(builder.Configuration.GetSection(HealthOptions.SectionName))
            .Validate(o => o.StallAfter > TimeSpan.Zero && o.Every > TimeSpan.Zero, "Fleet:Health:StallAfter and Every must be positive.")
            .ValidateOnStart();
        builder.Services.AddSingleton<SiloHealth>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<SiloHealth>());
        var jobs = builder.Configuration.GetSection(FleetJobOptions.SectionName).Get<FleetJobOptions>() ?? new FleetJobOptions();
        var placement = builder.Configuration.GetSection(GpuPlacementOptions.SectionName).Get<GpuPlacementOptions>() ?? new GpuPlacementOptions();
        // The accelerator this silo advertises: its own setting, else what the executor device will be.
        var accelerator = builder.Configuration["Fleet:Silo:Accelerator"]
                          ?? (DeviceExecutor.ResolveDevice(silo.Executor.Device).type == TorchSharp.DeviceType.CUDA ? "cuda" : "cpu");

        builder.UseOrleans(orleans =>
        {
            orleans.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = connection.ClusterId;
                o.ServiceId = connection.ServiceId;
            });

            if (connection.Clustering == "Localhost")
            {
                orleans.UseLocalhostClustering(silo.SiloPort, silo.GatewayPort);
                orleans.UseInMemoryReminderService();
            }
            else
            {
                var auto = silo.AdvertisedAddress == "auto";
                var advertised = auto ? HostAddress() : IPAddress.Parse(silo.AdvertisedAddress);
                orleans.ConfigureEndpoints(advertised, silo.SiloPort, silo.GatewayPort, listenOnAnyHostAddress: auto);
                orleans.UseAzureStorageClustering(o => o.TableServiceClient = new TableServiceClient(connection.StorageConnectionString));
                orleans.UseAzureTableReminderService(o => o.TableServiceClient = new TableServiceClient(connection.StorageConnectionString));
            }

            if (silo.InMemoryGrainState || connection.Clustering == "Localhost")
                orleans.AddMemoryGrainStorage(FleetStorage.GrainStateProvider);
            else
                orleans.AddAzureBlobGrainStorage(FleetStorage.GrainStateProvider,
                    o =>
                    {
                        o.BlobServiceClient = new BlobServiceClient(connection.StorageConnectionString, GrainStateClientOptions());
                        o.ContainerName = connection.GrainStateContainer;
                    });

            orleans.AddGpuPlacement(placement, accelerator);
            if (builder.Configuration.GetValue("Fleet:Gateway:Dashboard", true)) Orleans.Dashboard.ServiceCollectionExtensions.AddDashboard(orleans);
            orleans.AddFleetJobs(jobs, _ => new BlobArtifactStore(new BlobServiceClient(connection.StorageConnectionString), connection.ArtifactContainer),
                builder.Configuration.GetSection(ServingOptions.SectionName).Get<ServingOptions>());

            if (silo.FastFailureDetection)
            {
                orleans.Configure<ClusterMembershipOptions>(o =>
                {
                    o.ProbeTimeout = TimeSpan.FromSeconds(1);
                    o.NumMissedProbesLimit = 2;
                    o.NumVotesForDeathDeclaration = 1;
                    o.TableRefreshTimeout = TimeSpan.FromSeconds(2);
                    o.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(5);
                });
            }
        });
        return builder;
    }

    private static IPAddress HostAddress() =>
        Dns.GetHostAddresses(Dns.GetHostName())
            .FirstOrDefault(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && !IPAddress.IsLoopback(a))
        ?? throw new InvalidOperationException("Fleet:Silo:AdvertisedAddress is 'auto' but this host has no non-loopback IPv4 address.");

    /// <summary>
    /// <c>/health</c> (the process is up) and <c>/ready</c> (joined the cluster as active, the device works and its executor
    /// makes progress), answered at once from <see cref="SiloHealth"/>'s state; neither says more than the state's name.
    /// </summary>
    public static WebApplication MapFleetHealth(this WebApplication app)
    {
        app.MapGet("/health", () => Results.Ok(new { status = "up" }));
        app.MapGet("/ready", (SiloHealth health) => health.State == Readiness.Ready
            ? Results.Ok(new { status = "ready" })
            : Results.Problem(title: "not ready", detail: health.State.ToString(), statusCode: 503));
        return app;
    }

    /// <summary>
    /// Grain state blobs are small: when storage is down, a state write should fail within seconds (about 4 s
    /// here: 3 quick retries) rather than after Azure.Core's defaults (100 s network timeout, back-off up to
    /// a minute), because the grain waiting on it blocks every later call to it, and callers give up first.
    /// </summary>
    private static BlobClientOptions GrainStateClientOptions()
    {
        var options = new BlobClientOptions();
        options.Retry.MaxRetries = 3;
        options.Retry.Delay = TimeSpan.FromMilliseconds(250);
        options.Retry.MaxDelay = TimeSpan.FromSeconds(2);
        options.Retry.NetworkTimeout = TimeSpan.FromSeconds(10);
        return options;
    }
}
