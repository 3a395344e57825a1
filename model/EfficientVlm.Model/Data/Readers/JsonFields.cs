using System.Globalization;
using System.Text.Json;

namespace EfficientVlm.Model.Data.Readers;

/// <summary>Typed field access with errors that name the file, the record and the field.</summary>
internal readonly struct JsonRecord(JsonElement element, string file, string where)
{
    public JsonElement Element => element;

    public string Where => $"{file}: {where}";

    public JsonElement Required(string name, JsonValueKind kind)
    {
        if (element.ValueKind != JsonValueKind.Object) throw Error($"is not a JSON object");
        if (!element.TryGetProperty(name, out var value)) throw Error($"has no '{name}' field");
        if (value.ValueKind != kind && !(kind == JsonValueKind.True && value.ValueKind == JsonValueKind.False))
            throw Error($"field '{name}' should be {Describe(kind)} but is {Describe(value.ValueKind)}");
        return value;
    }

    public bool Has(string name) => element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out _);

    public string String(string name) => Required(name, JsonValueKind.String).GetString()!;

    public string? OptionalString(string name) =>
        element.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public long Long(string name)
    {
        var v = Required(name, JsonValueKind.Number);
        return v.TryGetInt64(out var l) ? l : throw Error($"field '{name}' is not an integer ({v.GetRawText()})");
    }

    public JsonElement Array(string name) => Required(name, JsonValueKind.Array);

    public IEnumerable<JsonRecord> Records(string name)
    {
        int i = 0;
        foreach (var item in Array(name).EnumerateArray())
            yield return new JsonRecord(item, file, $"{name}[{i++}]");
    }

    public DatasetFormatException Error(string what) => new($"{file}: record {where} {what}.");

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString().ToLower(CultureInfo.InvariantCulture),
    };
}

internal static class JsonFiles
{
    /// <summary>Parses a whole JSON file; a syntax error names the file and the position.</summary>
    public static JsonDocument Parse(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path} does not exist.", path);
        try
        {
            using var stream = File.OpenRead(path);
            return JsonDocument.Parse(stream, new JsonDocumentOptions { AllowTrailingCommas = false });
        }
        catch (JsonException e)
        {
            throw new DatasetFormatException($"{path}: not valid JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine}): {e.Message}", e);
        }
    }

    public static JsonRecord Root(JsonDocument doc, string path) => new(doc.RootElement, path, "(top level)");

    /// <summary>Items of a top-level JSON array (the X-VLM/ALBEF files).</summary>
    public static IEnumerable<JsonRecord> ArrayItems(JsonDocument doc, string path)
    {
        if (doc.RootElement.ValueKind != JsonValueKind.Array)
            throw new DatasetFormatException($"{path}: expected a JSON array at the top level.");
        int i = 0;
        foreach (var item in doc.RootElement.EnumerateArray())
            yield return new JsonRecord(item, path, $"[{i++}]");
    }
}
