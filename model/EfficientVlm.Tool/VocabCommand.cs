using System.CommandLine;
using System.Text.Json;
using EfficientVlm.Model.Text;
using Spectre.Console;

namespace EfficientVlm.Tool;

internal static class VocabCommand
{
    public static Command Create()
    {
        var input = new Option<FileInfo[]>("--captions")
        {
            Description = "caption files: COCO captions JSON (annotations[].caption) or plain text, one caption per line",
            Required = true,
            AllowMultipleArgumentsPerToken = true,
        };
        var output = new Option<FileInfo>("--out") { Description = "vocab.txt to write", Required = true };
        var maxSize = new Option<int>("--max-size") { Description = "most lines", DefaultValueFactory = _ => 30522 };
        var minCount = new Option<int>("--min-count") { Description = "least occurrences for a whole word", DefaultValueFactory = _ => 1 };
        var build = new Command("build", "Build a BERT-style vocab.txt from a caption corpus.") { input, output, maxSize, minCount };
        build.SetAction(parse =>
        {
            var captions = new List<string>();
            foreach (var file in parse.GetValue(input)!)
            {
                if (!file.Exists)
                {
                    AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {file.FullName} does not exist");
                    return 1;
                }
                try
                {
                    captions.AddRange(ReadCaptions(file.FullName));
                }
                catch (Exception e) when (e is JsonException or InvalidDataException)
                {
                    AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {file.FullName}: {e.Message}");
                    return 1;
                }
            }
            var vocab = VocabularyBuilder.Build(captions, parse.GetValue(maxSize), parse.GetValue(minCount));
            var path = parse.GetValue(output)!.FullName;
            VocabularyBuilder.Write(vocab, path);
            AnsiConsole.MarkupLineInterpolated($"wrote [green]{path}[/]: {vocab.Count} pieces from {captions.Count:N0} captions");
            return 0;
        });
        return new Command("vocab", "Word-piece vocabularies.") { build };
    }

    /// <summary>COCO captions JSON when the file parses as JSON with annotations; else one caption per line.</summary>
    internal static IEnumerable<string> ReadCaptions(string path)
    {
        var text = File.ReadAllText(path);
        if (!text.TrimStart().StartsWith('{')) return text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        using var doc = JsonDocument.Parse(text);
        if (!doc.RootElement.TryGetProperty("annotations", out var annotations) || annotations.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException("a JSON caption file needs an 'annotations' array (COCO captions format)");
        var captions = new List<string>();
        int index = 0;
        foreach (var a in annotations.EnumerateArray())
        {
            if (!a.TryGetProperty("caption", out var c) || c.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"annotations[{index}] has no string 'caption'");
            captions.Add(c.GetString()!);
            index++;
        }
        return captions;
    }
}
