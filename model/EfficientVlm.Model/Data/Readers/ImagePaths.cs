namespace EfficientVlm.Model.Data.Readers;

/// <summary>Finds an image among candidate paths; when images are not required, the first candidate stands in.</summary>
internal static class ImagePaths
{
    public static string Resolve(bool requireImages, string where, params string[] candidates)
    {
        foreach (var candidate in candidates)
            if (File.Exists(candidate)) return candidate;
        if (requireImages)
            throw new DatasetFormatException($"{where}: image not found (looked for {string.Join(", ", candidates)}).");
        return candidates[0];
    }
}
