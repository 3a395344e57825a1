namespace EfficientVlm.Model.Config;

/// <summary>
/// Named configurations. Paper scale follows method.md section 2 (X-VLM with a CLIP ViT-B/16 and
/// BERT-base; the student halves every depth). <c>demo</c> trains on 2 CPU cores in minutes and
/// keeps the paper's 2:1 teacher:student depth ratio; <c>tiny</c> is for tests.
/// </summary>
public static class Presets
{
    public static readonly VlmConfig PaperTeacher = new VlmConfig
    {
        Name = "paper-teacher",
        Hidden = 768, Heads = 12, Intermediate = 3072,
        VisionLayers = 12, TextLayers = 6, FusionLayers = 6, DecoderLayers = 6,
        ImageSize = 224, PatchSize = 16, VocabSize = 30522, MaxTextLength = 512, EmbedDim = 256,
    }.Validated();

    public static readonly VlmConfig PaperStudent = PaperTeacher with
    {
        Name = "paper-student",
        VisionLayers = 6, TextLayers = 3, FusionLayers = 3, DecoderLayers = 3,
    };

    /// <summary>ShapesWorld scale teacher: 64 px images, patch 8 (65 image tokens).</summary>
    public static readonly VlmConfig DemoTeacher = new VlmConfig
    {
        Name = "demo-teacher",
        Hidden = 256, Heads = 4, Intermediate = 1024,
        VisionLayers = 6, TextLayers = 4, FusionLayers = 4, DecoderLayers = 4,
        ImageSize = 64, PatchSize = 8, VocabSize = 512, MaxTextLength = 40, EmbedDim = 128, Dropout = 0.0,
    }.Validated();

    public static readonly VlmConfig Demo = DemoTeacher with
    {
        Name = "demo",
        VisionLayers = 3, TextLayers = 2, FusionLayers = 2, DecoderLayers = 2,
    };

    /// <summary>
    /// The CPU-sized teacher for ShapesWorld: the demo depths at D 128 (thousands of steps an hour on 2 cores),
    /// a convolutional stem before the 8x8 patch grid and 2-D sine-cosine positions at content scale
    /// (docs/training.md, "The CPU teacher").
    /// </summary>
    public static readonly VlmConfig CpuTeacher = DemoTeacher with
    {
        Name = "cpu-teacher",
        Hidden = 128, Heads = 4, Intermediate = 512, EmbedDim = 128,
        Stem = VisionStem.Conv, Positions = VisionPositions.SinCos,
    };

    /// <summary>The CPU teacher's compact student: half of every depth (method.md section 2).</summary>
    public static readonly VlmConfig Cpu = CpuTeacher with
    {
        Name = "cpu",
        VisionLayers = 3, TextLayers = 2, FusionLayers = 2, DecoderLayers = 2,
    };

    /// <summary>Odd sizes on purpose (hidden 32, FFN 37, image 24 with patch 8).</summary>
    public static readonly VlmConfig Tiny = new VlmConfig
    {
        Name = "tiny",
        Hidden = 32, Heads = 4, Intermediate = 37,
        VisionLayers = 2, TextLayers = 1, FusionLayers = 2, DecoderLayers = 1,
        ImageSize = 24, PatchSize = 8, VocabSize = 61, MaxTextLength = 16, EmbedDim = 16, Dropout = 0.0,
    }.Validated();

    public static IReadOnlyDictionary<string, VlmConfig> All { get; } = new Dictionary<string, VlmConfig>
    {
        ["paper-teacher"] = PaperTeacher,
        ["paper-student"] = PaperStudent,
        ["demo-teacher"] = DemoTeacher,
        ["demo"] = Demo,
        ["cpu-teacher"] = CpuTeacher,
        ["cpu"] = Cpu,
        ["tiny"] = Tiny,
    };

    /// <exception cref="ArgumentException">Unknown preset; the message lists the known ones.</exception>
    public static VlmConfig Get(string name) =>
        All.TryGetValue(name, out var config)
            ? config
            : throw new ArgumentException($"Unknown model preset '{name}'. Known: {string.Join(", ", All.Keys)}.");
}
