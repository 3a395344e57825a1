using System.Globalization;
using System.Text.Json;

namespace EfficientVlm.Model.Data.Readers;

/// <summary>Readers of caption files: COCO captions, Karpathy's dataset_*.json, the X-VLM/ALBEF caption JSON.</summary>
public static class CaptionReaders
{
    /// <summary>
    /// COCO captions (<c>captions_*.json</c>): <c>images[]</c> {id, file_name} and <c>annotations[]</c>
    /// {image_id, caption}. Images are looked up in <paramref name="imageRoot"/>. Captions of images
    /// the file does not list are skipped with a warning (excerpts of the real files have them).
    /// </summary>
    public static ReadResult<CaptionImage> ReadCoco(string path, string imageRoot, bool requireImages = true)
    {
        using var doc = JsonFiles.Parse(path);
        var root = JsonFiles.Root(doc, path);
        var images = new Dictionary<long, (string Path, List<string> Captions)>();
        var order = new List<long>();
        foreach (var image in root.Records("images"))
        {
            long id = image.Long("id");
            var file = image.String("file_name");
            if (!images.TryAdd(id, (ImagePaths.Resolve(requireImages, image.Where, Path.Combine(imageRoot, file)), [])))
                throw image.Error($"repeats image id {id}");
            order.Add(id);
        }
        var warnings = new List<string>();
        int dangling = 0;
        foreach (var annotation in root.Records("annotations"))
        {
            long imageId = annotation.Long("image_id");
            var caption = annotation.String("caption");
            if (images.TryGetValue(imageId, out var entry)) entry.Captions.Add(caption);
            else dangling++;
        }
        if (dangling > 0) warnings.Add($"{path}: {dangling} captions refer to images not listed in the file; skipped.");
        return new(order.Select(id => new CaptionImage(id, images[id].Path, images[id].Captions)).ToList(), warnings);
    }

    /// <summary>
    /// Karpathy's <c>dataset_coco.json</c> / <c>dataset_flickr8k.json</c>: <c>images[]</c> with filename,
    /// optional filepath, split, sentences[].raw, and cocoid (when absent, imgid is the id). Only the
    /// images of <paramref name="split"/> (all when null; "restval" counts as "train").
    /// </summary>
    public static ReadResult<CaptionImage> ReadKarpathy(string path, string imageRoot, string? split, bool requireImages = true)
    {
        using var doc = JsonFiles.Parse(path);
        var root = JsonFiles.Root(doc, path);
        var result = new List<CaptionImage>();
        foreach (var image in root.Records("images"))
        {
            var imageSplit = image.String("split");
            if (imageSplit == "restval") imageSplit = "train";
            if (split is not null && imageSplit != split) continue;
            var file = image.String("filename");
            var folder = image.OptionalString("filepath");
            long id = image.Has("cocoid") ? image.Long("cocoid") : image.Long("imgid");
            var captions = new List<string>();
            int s = 0;
            foreach (var sentence in image.Records("sentences"))
            {
                captions.Add(sentence.String("raw"));
                s++;
            }
            var candidates = folder is null ? new[] { Path.Combine(imageRoot, file) } : [Path.Combine(imageRoot, folder, file), Path.Combine(imageRoot, file)];
            result.Add(new CaptionImage(id, ImagePaths.Resolve(requireImages, image.Where, candidates), captions));
        }
        return new(result, []);
    }

    /// <summary>
    /// X-VLM / ALBEF caption JSON: either one record per caption {caption, image, image_id:"coco_N"}
    /// (coco_karpathy_train.json) or one per image {image, caption:[...]} (coco_karpathy_val/test.json).
    /// Paths are relative to <paramref name="imageRoot"/>; the id comes from image_id or from the file name.
    /// </summary>
    public static ReadResult<CaptionImage> ReadXvlm(string path, string imageRoot, bool requireImages = true)
    {
        using var doc = JsonFiles.Parse(path);
        var byImage = new Dictionary<string, (long Id, string Path, List<string> Captions)>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var record in JsonFiles.ArrayItems(doc, path))
        {
            var image = record.String("image");
            if (!byImage.TryGetValue(image, out var entry))
            {
                long id = record.OptionalString("image_id") is { } imageId ? ParseTrailingNumber(imageId, record)
                    : ParseTrailingNumber(Path.GetFileNameWithoutExtension(image), record);
                entry = (id, ImagePaths.Resolve(requireImages, record.Where, Path.Combine(imageRoot, image)), []);
                byImage[image] = entry;
                order.Add(image);
            }
            var caption = record.Element.TryGetProperty("caption", out var c) ? c : throw record.Error("has no 'caption' field");
            switch (caption.ValueKind)
            {
                case JsonValueKind.String: entry.Captions.Add(caption.GetString()!); break;
                case JsonValueKind.Array:
                    foreach (var item in caption.EnumerateArray())
                        entry.Captions.Add(item.ValueKind == JsonValueKind.String ? item.GetString()! : throw record.Error("has a non-string caption"));
                    break;
                default: throw record.Error("field 'caption' should be a string or an array of strings");
            }
        }
        return new(order.Select(k => new CaptionImage(byImage[k].Id, byImage[k].Path, byImage[k].Captions)).ToList(), []);
    }

    /// <summary>"coco_522418" -> 522418; "COCO_val2014_000000391895" -> 391895.</summary>
    private static long ParseTrailingNumber(string text, JsonRecord record)
    {
        int end = text.Length, start = end;
        while (start > 0 && char.IsAsciiDigit(text[start - 1])) start--;
        if (start == end) throw record.Error($"has no numeric image id in '{text}'");
        return long.Parse(text.AsSpan(start, end - start), CultureInfo.InvariantCulture);
    }
}
