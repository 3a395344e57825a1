using System.Text.Json;

namespace EfficientVlm.Model.Data.Readers;

/// <summary>Readers of NLVR2 files: the official JSONL, and the X-VLM/ALBEF nlvr_*.json.</summary>
public static class NlvrReaders
{
    /// <summary>
    /// NLVR2 JSONL: one object per line with identifier (<c>split-set-pair-sentence</c>), sentence and
    /// label ("True"/"False"); other fields (validation, writer, synset, urls, directory, ...) are
    /// ignored. The images are found from the identifier, as with the real data set: <c>split-set-pair-img0.png</c>
    /// and <c>-img1.png</c>, in <c>imageRoot/split/</c>, <c>imageRoot/split/&lt;directory&gt;/</c> (train) or <c>imageRoot/</c>.
    /// </summary>
    public static ReadResult<NlvrItem> ReadJsonl(string path, string imageRoot, bool requireImages = true)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path} does not exist.", path);
        var items = new List<NlvrItem>();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(line);
            }
            catch (JsonException e)
            {
                throw new DatasetFormatException($"{path}: line {lineNumber} is not valid JSON: {e.Message}", e);
            }
            using (doc)
            {
                var r = new JsonRecord(doc.RootElement, path, $"line {lineNumber}");
                var identifier = r.String("identifier");
                var sentence = r.String("sentence");
                var label = ParseLabel(r.String("label"), r);
                var parts = identifier.Split('-');
                if (parts.Length != 4) throw r.Error($"identifier '{identifier}' is not split-set-pair-sentence");
                var split = parts[0];
                var stem = $"{parts[0]}-{parts[1]}-{parts[2]}";
                var directory = r.Element.TryGetProperty("directory", out var d) ? d.ToString() : null;
                string[] Candidates(int side)
                {
                    var name = $"{stem}-img{side}.png";
                    var list = new List<string> { Path.Combine(imageRoot, split, name) };
                    if (directory is not null) list.Add(Path.Combine(imageRoot, split, directory, name));
                    list.Add(Path.Combine(imageRoot, name));
                    return list.ToArray();
                }
                items.Add(new NlvrItem(identifier, sentence, label,
                    ImagePaths.Resolve(requireImages, r.Where, Candidates(0)), ImagePaths.Resolve(requireImages, r.Where, Candidates(1))));
            }
        }
        return new(items, []);
    }

    /// <summary>X-VLM / ALBEF nlvr_*.json: [{images: [left, right], sentence, label}], paths relative to <paramref name="imageRoot"/>.</summary>
    public static ReadResult<NlvrItem> ReadXvlm(string path, string imageRoot, bool requireImages = true)
    {
        using var doc = JsonFiles.Parse(path);
        var items = new List<NlvrItem>();
        foreach (var r in JsonFiles.ArrayItems(doc, path))
        {
            var images = r.Array("images");
            if (images.GetArrayLength() != 2 || images.EnumerateArray().Any(i => i.ValueKind != JsonValueKind.String))
                throw r.Error("field 'images' should hold exactly two paths");
            var left = images[0].GetString()!;
            var right = images[1].GetString()!;
            items.Add(new NlvrItem(Path.GetFileNameWithoutExtension(left).Replace("-img0", "-0", StringComparison.Ordinal),
                r.String("sentence"), ParseLabel(r.String("label"), r),
                ImagePaths.Resolve(requireImages, r.Where, Path.Combine(imageRoot, left)),
                ImagePaths.Resolve(requireImages, r.Where, Path.Combine(imageRoot, right))));
        }
        return new(items, []);
    }

    private static bool ParseLabel(string label, JsonRecord r) => label switch
    {
        "True" => true,
        "False" => false,
        _ => throw r.Error($"label '{label}' is neither \"True\" nor \"False\""),
    };
}
