namespace EfficientVlm.Model.Data.Readers;

/// <summary>
/// The files of a data folder laid out as <c>vlm data generate</c> writes it (COCO-style <c>annotations/</c> and
/// <c>images/&lt;split&gt;/</c>, NLVR2's <c>nlvr2/&lt;split&gt;.json</c> and <c>nlvr2/images/</c>), read per split.
/// </summary>
public static class DataFolder
{
    /// <summary>The images of a split with their COCO captions.</summary>
    public static IReadOnlyList<CaptionImage> Captions(string root, string split, bool requireImages = true) =>
        CaptionReaders.ReadCoco(Path.Combine(root, "annotations", $"captions_{split}.json"), Path.Combine(root, "images", split), requireImages).Items;

    /// <summary>The VQAv2 questions of a split with their annotations.</summary>
    public static IReadOnlyList<VqaItem> Vqa(string root, string split, bool requireImages = true) =>
        VqaReaders.ReadVqaV2(Path.Combine(root, "annotations", $"v2_OpenEnded_mscoco_{split}_questions.json"),
            Path.Combine(root, "annotations", $"v2_mscoco_{split}_annotations.json"), Path.Combine(root, "images", split), requireImages).Items;

    /// <summary>The NLVR2 statements of a split.</summary>
    public static IReadOnlyList<NlvrItem> Nlvr(string root, string split, bool requireImages = true) =>
        NlvrReaders.ReadJsonl(Path.Combine(root, "nlvr2", $"{split}.json"), Path.Combine(root, "nlvr2", "images"), requireImages).Items;
}
