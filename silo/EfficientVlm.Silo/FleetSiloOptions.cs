using EfficientVlm.Model.Runtime;

namespace EfficientVlm.Silo;

/// <summary>This silo's own settings; configuration section <c>Fleet:Silo</c>.</summary>
public sealed record FleetSiloOptions
{
    public const string SectionName = "Fleet:Silo";

    /// <summary>Port for silo-to-silo traffic.</summary>
    public int SiloPort { get; init; } = 11111;

    /// <summary>Port clients connect to.</summary>
    public int GatewayPort { get; init; } = 30000;

    /// <summary>Address advertised to the cluster. Loopback by default (one machine); <c>auto</c> takes the
    /// host's first non-loopback IPv4 address and listens on all interfaces (containers, real clusters).</summary>
    public string AdvertisedAddress { get; init; } = "127.0.0.1";

    /// <summary>Declare a dead silo dead in about a second instead of about ten (tests, demos, small clusters on one host).</summary>
    public bool FastFailureDetection { get; init; }

    /// <summary>Grain state in memory instead of Azure Blob (development only: nothing survives a restart).</summary>
    public bool InMemoryGrainState { get; init; }

    /// <summary>The device executor of this silo.</summary>
    public DeviceExecutorOptions Executor { get; init; } = new();

    public void Validate()
    {
        if (SiloPort is < 1 or > 65535) throw new ArgumentException($"Fleet:Silo:SiloPort {SiloPort} is not a port.");
        if (GatewayPort is < 1 or > 65535) throw new ArgumentException($"Fleet:Silo:GatewayPort {GatewayPort} is not a port.");
        if (SiloPort == GatewayPort) throw new ArgumentException("Fleet:Silo:SiloPort and GatewayPort must differ.");
        if (AdvertisedAddress != "auto" && !System.Net.IPAddress.TryParse(AdvertisedAddress, out _))
            throw new ArgumentException($"Fleet:Silo:AdvertisedAddress '{AdvertisedAddress}' is neither an IP address nor 'auto'.");
        Executor.Validate();
    }
}
