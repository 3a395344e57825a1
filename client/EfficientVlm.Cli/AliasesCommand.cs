using System.CommandLine;
using Spectre.Console;

namespace EfficientVlm.Cli;

internal static class AliasesCommand
{
    public static Command Create()
    {
        var aliases = new Command("aliases", "Stable names for variants (for example vqa-default).");
        var name = new Argument<string>("alias");
        var variant = new Argument<string>("variant");
        var set = new Command("set", "Point an alias at a ready variant; it moves only once the variant's replicas are warm.") { name, variant };
        set.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var a = await client.SetAliasAsync(parse.GetValue(name)!, parse.GetValue(variant)!, ct);
            AnsiConsole.MarkupLineInterpolated($"[green]{a.Alias}[/] -> {a.Variant}{(a.Previous is null ? "" : $" (was {a.Previous})")}");
        }));
        var list = new Command("list", "List the aliases.");
        list.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var table = new Table().AddColumns("alias", "variant", "since (UTC)", "previous");
            foreach (var a in await client.ListAliasesAsync(ct)) table.AddRow(a.Alias, a.Variant, a.Since.UtcDateTime.ToString("u"), a.Previous ?? "-");
            AnsiConsole.Write(table);
        }));
        aliases.Subcommands.Add(set);
        aliases.Subcommands.Add(list);
        return aliases;
    }
}
