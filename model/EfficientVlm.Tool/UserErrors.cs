using System.CommandLine;
using EfficientVlm.Model.Data.Readers;
using Spectre.Console;

namespace EfficientVlm.Tool;

/// <summary>Errors caused by what the user passed (bad options, missing or malformed files): one red line, exit code 1.</summary>
internal static class UserErrors
{
    public static bool Is(Exception e) =>
        e is ArgumentException or FileNotFoundException or DirectoryNotFoundException or InvalidDataException or DatasetFormatException;

    public static int Report(Exception e)
    {
        AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {e.Message}");
        return 1;
    }
}

/// <summary>Checks on option values, reported by the parser before a command runs.</summary>
internal static class OptionChecks
{
    /// <summary>Refuses a value below 1 ("--name must be at least 1."); returns the option.</summary>
    public static Option<int> AtLeastOne(this Option<int> option)
    {
        option.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 1) r.AddError($"{option.Name} must be at least 1."); });
        return option;
    }
}
