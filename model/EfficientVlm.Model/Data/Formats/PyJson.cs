using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace EfficientVlm.Model.Data.Formats;

/// <summary>
/// Writes JSON the way Python's <c>json.dumps</c> does by default (", " and ": " separators, keys
/// in insertion order, non-ASCII escaped), which is how the official VQA, COCO and NLVR2 files are
/// written. Output is byte-for-byte reproducible.
/// </summary>
public static class PyJson
{
    private static readonly JsonSerializerOptions StringOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string Serialize(JsonNode? node)
    {
        var sb = new StringBuilder();
        Write(sb, node);
        return sb.ToString();
    }

    public static void Write(StringBuilder sb, JsonNode? node)
    {
        switch (node)
        {
            case null:
                sb.Append("null");
                break;
            case JsonObject obj:
            {
                sb.Append('{');
                bool first = true;
                foreach (var (key, value) in obj)
                {
                    if (!first) sb.Append(", ");
                    first = false;
                    WriteString(sb, key);
                    sb.Append(": ");
                    Write(sb, value);
                }
                sb.Append('}');
                break;
            }
            case JsonArray array:
            {
                sb.Append('[');
                for (int i = 0; i < array.Count; i++)
                {
                    if (i > 0) sb.Append(", ");
                    Write(sb, array[i]);
                }
                sb.Append(']');
                break;
            }
            case JsonValue value:
                if (value.TryGetValue<string>(out var s)) WriteString(sb, s);
                else if (value.TryGetValue<bool>(out var b)) sb.Append(b ? "true" : "false");
                else if (value.TryGetValue<long>(out var l)) sb.Append(l.ToString(CultureInfo.InvariantCulture));
                else if (value.TryGetValue<int>(out var i)) sb.Append(i.ToString(CultureInfo.InvariantCulture));
                else if (value.TryGetValue<double>(out var d)) sb.Append(d.ToString("R", CultureInfo.InvariantCulture));
                else sb.Append(value.ToJsonString());
                break;
        }
    }

    private static void WriteString(StringBuilder sb, string s)
    {
        // Python escapes every non-ASCII character as \uXXXX; System.Text.Json's relaxed encoder leaves them, so do it here.
        var encoded = JsonSerializer.Serialize(s, StringOptions);
        foreach (var ch in encoded)
        {
            if (ch < 128) sb.Append(ch);
            else sb.Append("\\u").Append(((int)ch).ToString("x4", CultureInfo.InvariantCulture));
        }
    }

    /// <summary>Writes <paramref name="content"/> to a temporary file and renames it into place.</summary>
    public static void WriteFileAtomic(string path, string content)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var temp = path + ".tmp";
        File.WriteAllText(temp, content, new UTF8Encoding(false));
        File.Move(temp, path, overwrite: true);
    }
}
