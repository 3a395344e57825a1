using System.Text.Json;

namespace EfficientVlm.Model.Data.Readers;

/// <summary>One annotated object: its box [x, y, w, h] in pixels of the original image and its category.</summary>
public sealed record ObjectBox(int CategoryId, float X, float Y, float Width, float Height);

/// <summary>An image's objects; Width and Height are the image's own (boxes are in its pixels).</summary>
public sealed record ImageObjects(long ImageId, int Width, int Height, IReadOnlyList<ObjectBox> Objects);

/// <summary>A COCO instances file: the categories (id -> name) and every image's objects.</summary>
public sealed record InstanceSet(IReadOnlyDictionary<int, string> Categories, IReadOnlyDictionary<long, ImageObjects> Images);

/// <summary>Readers of object annotations: COCO instances (<c>instances_*.json</c>).</summary>
public static class InstanceReaders
{
    /// <summary>
    /// COCO instances: <c>images[]</c> {id, width, height}, <c>annotations[]</c> {image_id, category_id,
    /// bbox [x, y, w, h]} (segmentation, area and the rest are read past) and <c>categories[]</c> {id, name}.
    /// A box outside its image, a non-positive side, an unknown category or image is a <see cref="DatasetFormatException"/>
    /// naming the record; crowd regions (<c>iscrowd</c> 1) are skipped, as detection training does.
    /// </summary>
    public static InstanceSet ReadCoco(string path)
    {
        using var doc = JsonFiles.Parse(path);
        var root = JsonFiles.Root(doc, path);
        var categories = new Dictionary<int, string>();
        foreach (var c in root.Records("categories"))
            if (!categories.TryAdd(checked((int)c.Long("id")), c.String("name"))) throw c.Error("repeats its category id");
        var sizes = new Dictionary<long, (int W, int H)>();
        foreach (var image in root.Records("images"))
        {
            int w = checked((int)image.Long("width")), h = checked((int)image.Long("height"));
            if (w <= 0 || h <= 0) throw image.Error($"has size {w} x {h}");
            if (!sizes.TryAdd(image.Long("id"), (w, h))) throw image.Error("repeats its image id");
        }
        var objects = sizes.Keys.ToDictionary(id => id, _ => new List<ObjectBox>());
        foreach (var a in root.Records("annotations"))
        {
            if (a.Has("iscrowd") && a.Long("iscrowd") != 0) continue;
            long imageId = a.Long("image_id");
            int category = checked((int)a.Long("category_id"));
            if (!sizes.TryGetValue(imageId, out var size)) throw a.Error($"refers to image {imageId}, which the file does not list");
            if (!categories.ContainsKey(category)) throw a.Error($"has category {category}, which the file does not list");
            var bbox = a.Array("bbox");
            if (bbox.GetArrayLength() != 4 || bbox.EnumerateArray().Any(v => v.ValueKind != JsonValueKind.Number))
                throw a.Error("has a bbox that is not four numbers");
            var v = bbox.EnumerateArray().Select(e => e.GetSingle()).ToArray();
            if (v[2] <= 0 || v[3] <= 0 || v[0] + v[2] <= 0 || v[1] + v[3] <= 0 || v[0] >= size.W || v[1] >= size.H)
                throw a.Error($"has a box [{string.Join(", ", v)}] that is empty or outside its {size.W} x {size.H} image");
            objects[imageId].Add(new ObjectBox(category, v[0], v[1], v[2], v[3]));
        }
        return new InstanceSet(categories,
            objects.ToDictionary(kv => kv.Key, kv => new ImageObjects(kv.Key, sizes[kv.Key].W, sizes[kv.Key].H, kv.Value)));
    }
}
