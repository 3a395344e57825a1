using System.CommandLine;
using EfficientVlm.Grains.Abstractions;
using Spectre.Console;

namespace EfficientVlm.Cli;

internal static class ModelsCommand
{
    public static Command Create()
    {
        var models = new Command("models", "Task-agnostic compact models known to the fleet.");

        var list = new Command("list", "List the compact models.");
        list.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var table = new Table().AddColumns("id", "preset", "artefact", "registered (UTC)");
            foreach (var m in await client.ListCompactModelsAsync(ct))
                table.AddRow(m.Id, m.Preset, m.ArtifactHash ?? "-", m.RegisteredAt.UtcDateTime.ToString("u"));
            AnsiConsole.Write(table);
        }));

        var id = new Option<string>("--id") { Description = "model id (lower-case letters, digits, . _ -)", Required = true };
        var preset = new Option<string>("--preset") { Description = "model preset", DefaultValueFactory = _ => "demo" };
        var register = new Command("register", "Register a compact model (idempotent by id).") { id, preset };
        register.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var m = await client.RegisterCompactModelAsync(
                new CompactModelRegistration(parse.GetValue(id)!, parse.GetValue(preset)!, null), ct);
            AnsiConsole.MarkupLineInterpolated($"registered [green]{m.Id}[/] ({m.Preset}) at {m.RegisteredAt.UtcDateTime:u}");
        }));

        models.Subcommands.Add(list);
        models.Subcommands.Add(register);
        return models;
    }
}
