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
