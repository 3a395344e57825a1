using System.CommandLine;
using Spectre.Console;

namespace EfficientVlm.Cli;

internal static class ProbeCommand
{
    public static Command Create()
    {
        var command = new Command("probe", "Run a small known computation on a silo's device executor (smoke test).");
        command.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var result = await client.ProbeDeviceAsync(ct);
            var table = new Table().AddColumns("silo", "device", "torch", "trace(A·Aᵀ)", "ms");
            table.AddRow(result.SiloAddress, result.Device, result.Torch, result.MatmulTrace.ToString("0.###"),
                result.ElapsedMilliseconds.ToString("0.0"));
            AnsiConsole.Write(table);
            if (result.MatmulTrace != 55f)
                throw new ArgumentException($"The silo computed {result.MatmulTrace}, expected 55: its libtorch is broken.");
        }));
        return command;
    }
}
