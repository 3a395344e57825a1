using System.CommandLine;
using EfficientVlm.Client;
using EfficientVlm.Grains.Abstractions;
using Spectre.Console;

namespace EfficientVlm.Cli;

/// <summary>Connection settings: options, else environment (Fleet__ClusterId, Fleet__StorageConnectionString), else defaults (Azurite).</summary>
internal static class CliConnection
{
    public static readonly Option<string?> ClusterOption = new("--cluster")
    {
        Description = "Orleans cluster id (default: $Fleet__ClusterId or efficientvlm-dev)",
        Recursive = true,
    };

    public static readonly Option<string?> StorageOption = new("--storage")
    {
        Description = "Azure Storage connection string (default: $Fleet__StorageConnectionString or Azurite)",
        Recursive = true,
    };

    public static FleetConnectionOptions From(ParseResult parse)
    {
        var defaults = new FleetConnectionOptions();
        return defaults with
        {
            ClusterId = parse.GetValue(ClusterOption) ?? Environment.GetEnvironmentVariable("Fleet__ClusterId") ?? defaults.ClusterId,
            ServiceId = Environment.GetEnvironmentVariable("Fleet__ServiceId") ?? defaults.ServiceId,
            StorageConnectionString = parse.GetValue(StorageOption)
                ?? Environment.GetEnvironmentVariable("Fleet__StorageConnectionString") ?? defaults.StorageConnectionString,
        };
    }

    /// <summary>Connects, runs <paramref name="action"/>, and turns SDK errors into one red line and exit code 1.</summary>
    /// <summary>A <c>remove &lt;id&gt;</c> subcommand that calls <paramref name="remove"/> and says what went.</summary>
    public static Command RemoveCommand(string what, string description, Func<FleetClient, string, CancellationToken, Task> remove)
    {
        var id = new Argument<string>("id");
        var command = new Command("remove", description) { id };
        command.SetAction((parse, ct) => RunAsync(parse, ct, async client =>
        {
            await remove(client, parse.GetValue(id)!, ct);
            AnsiConsole.MarkupLineInterpolated($"{what} [green]{parse.GetValue(id)}[/] removed");
        }));
        return command;
    }

    public static async Task<int> RunAsync(ParseResult parse, CancellationToken ct, Func<FleetClient, Task> action)
    {
        try
        {
            await using var client = await FleetClient.ConnectAsync(From(parse), cancellationToken: ct);
            await action(client);
            return 0;
        }
        catch (Exception e) when (e is FleetUnavailableException or ArgumentException or TimeoutException or NoGpuSiloException)
        {
            AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {e.Message}");
            return 1;
        }
    }
}
