using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using EfficientVlm.Model.Data.Formats;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;

namespace EfficientVlm.Model.Data.ShapesWorld;

/// <summary>How much to generate (shapesworld.md defaults).</summary>
public sealed record GeneratorSizes
{
    public int TrainImages { get; init; } = 20_000;
    public int EvalImages { get; init; } = 1_000;
    public int QuestionsPerImage { get; init; } = 2;
    public int TrainPairs { get; init; } = 20_000;
    public int EvalPairs { get; init; } = 2_000;

    public int Images(string split) => split == "train" ? TrainImages : EvalImages;
    public int Pairs(string split) => split == "train" ? TrainPairs : EvalPairs;

    public void Validate()
    {
        if (TrainImages < 1 || EvalImages < 1) throw new ArgumentException("Every split needs at least one image.");
        if (QuestionsPerImage < 0 || TrainPairs < 0 || EvalPairs < 0) throw new ArgumentException("Counts must be 0 or more.");
        if (TrainPairs % 2 == 1 || EvalPairs % 2 == 1)
            throw new ArgumentException("NLVR2 pair counts must be even: each sentence is used once true and once false.");
    }
}

/// <summary>Progress of a generation run: the stage, and items done of the total.</summary>
public readonly record struct GeneratorProgress(string Stage, int Done, int Total);

/// <summary>What was written.</summary>
public sealed record GeneratorSummary(IReadOnlyDictionary<string, (int Images, int Captions, int Questions, int Pairs)> Splits,
    TimeSpan Elapsed, IReadOnlyDictionary<string, TimeSpan> Stages);

/// <summary>
/// Writes a ShapesWorld dataset in the official formats (shapesworld.md "Files"): COCO captions,
/// the Karpathy file, VQAv2 questions + annotations, NLVR2 JSONL with image pairs named as NLVR2
/// names them, the X-VLM/ALBEF fine-tuning JSON files under finetune/, and vocab.txt (word pieces of
/// the training text). Every pixel and byte is
/// a function of the seed; items are generated in parallel from independent random streams.
/// </summary>
public static class Generator
{
    public static readonly string[] Splits = ["train", "val", "test"];

    /// <summary>First image id of each split; ids advance by 2 (distinct, not contiguous).</summary>
    public static long ImageId(string split, int index) => split switch
    {
        "train" => 1 + 2L * index,
        "val" => 500_001 + 2L * index,
        _ => 700_001 + 2L * index,
    };

    private sealed record ImageItem(long Id, string File, Scene Scene, string[] Captions, List<GeneratedQuestion> Questions);
    private sealed record PairItem(int Index, string Sentence, bool Label);

    /// <param name="style">The renderer: the default, or the second one of the check sets (the text is the same for both).</param>
    public static GeneratorSummary Generate(string outDir, int seed, GeneratorSizes sizes, IProgress<GeneratorProgress>? progress = null,
        CancellationToken cancellationToken = default, RenderStyle style = RenderStyle.Coverage)
    {
        sizes.Validate();
        var started = DateTime.UtcNow;
        // noise makes row filters useless; skip them (fast, still lossless)
        var png = new PngEncoder { CompressionLevel = PngCompressionLevel.BestSpeed, FilterMethod = PngFilterMethod.None };
        var counts = new Dictionary<string, (int, int, int, int)>();
        var allImages = new Dictionary<string, ImageItem[]>();
        var allPairs = new Dictionary<string, PairItem[]>();
        // More workers than cores: each item ends in a file write, and those overlap with rendering.
        var parallel = new ParallelOptions { CancellationToken = cancellationToken, MaxDegreeOfParallelism = 2 * Environment.ProcessorCount };
        var stages = new Dictionary<string, TimeSpan>();
        var clock = System.Diagnostics.Stopwatch.StartNew();

        foreach (var split in Splits)
        {
            int n = sizes.Images(split), done = 0;
            var items = new ImageItem[n];
            Directory.CreateDirectory(Path.Combine(outDir, "images", split));
            Parallel.For(0, n, parallel, i =>
            {
                var rng = Seeds.For(seed, $"{split}/image", i);
                var scene = Scene.Sample(rng);
                var captions = Language.Captions(scene, rng);
                var questions = Questions.Generate(scene, rng, sizes.QuestionsPerImage);
                long id = ImageId(split, i);
                var file = $"COCO_{split}_{id:D12}.png";
                using (var image = Renderer.Render(scene, rng, style))
                    image.Save(Path.Combine(outDir, "images", split, file), png);
                items[i] = new ImageItem(id, file, scene, captions, questions);
                var d = Interlocked.Increment(ref done);
                if (d % 250 == 0 || d == n) progress?.Report(new($"{split} images", d, n));
            });
            allImages[split] = items;
            stages[$"{split} images"] = clock.Elapsed;
            clock.Restart();

            int pairs = sizes.Pairs(split);
            var pairItems = new PairItem[pairs];
            Directory.CreateDirectory(Path.Combine(outDir, "nlvr2", "images", split));
            done = 0;
            Parallel.For(0, pairs / 2, parallel, k =>
            {
                var rng = Seeds.For(seed, $"{split}/nlvr2", k);
                var (statement, trueScenes, falseScenes) = SampleStatementPairs(rng);
                // which of the two identifiers gets the true pair is random too
                bool trueFirst = rng.Next(2) == 0;
                foreach (var (index, scenes, label) in new[]
                         {
                             (2 * k + (trueFirst ? 0 : 1), trueScenes, true),
                             (2 * k + (trueFirst ? 1 : 0), falseScenes, false),
                         })
                {
                    for (int side = 0; side < 2; side++)
                    {
                        using var image = Renderer.Render(side == 0 ? scenes.Left : scenes.Right, rng, style);
                        image.Save(Path.Combine(outDir, "nlvr2", "images", split, $"{split}-{index}-0-img{side}.png"), png);
                    }
                    pairItems[index] = new PairItem(index, statement.Sentence, label);
                }
                var d = Interlocked.Add(ref done, 2);
                if (d % 250 == 0 || d == pairs) progress?.Report(new($"{split} NLVR2 pairs", d, pairs));
            });
            allPairs[split] = pairItems;
            stages[$"{split} NLVR2 pairs"] = clock.Elapsed;
            clock.Restart();
            counts[split] = (n, n * 5, items.Sum(i => i.Questions.Count), pairs);
        }

        progress?.Report(new("annotation files", 0, 1));
        WriteAnnotations(outDir, allImages, allPairs);
        progress?.Report(new("annotation files", 1, 1));
        stages["annotation files"] = clock.Elapsed;
        return new GeneratorSummary(counts, DateTime.UtcNow - started, stages);
    }

    /// <summary>A statement with one scene pair where it holds and one where it does not (resampled until both exist).</summary>
    private static (Statement, (Scene Left, Scene Right), (Scene Left, Scene Right)) SampleStatementPairs(Random rng)
    {
        while (true)
        {
            var statement = Statements.Sample(rng);
            (Scene, Scene)? yes = null, no = null;
            for (int attempt = 0; attempt < 400 && (yes is null || no is null); attempt++)
            {
                var left = Scene.Sample(rng);
                var right = Scene.Sample(rng);
                if (statement.Holds(left, right)) yes ??= (left, right);
                else no ??= (left, right);
            }
            if (yes is not null && no is not null) return (statement, yes.Value, no.Value);
        }
    }

    private static JsonObject Info(string description) => new()
    {
        ["description"] = description,
        ["url"] = "",
        ["version"] = "1.0",
        ["year"] = 2026,
        ["contributor"] = "EfficientVlm.Fleet ShapesWorld generator",
        ["date_created"] = "2026-11-27 00:00:00",
    };

    private static JsonObject License() => new()
    {
        ["url"] = "http://creativecommons.org/licenses/by/4.0/",
        ["name"] = "Creative Commons Attribution 4.0 International License",
    };

    private static JsonArray Array(IEnumerable<JsonNode?> items) => new(items.ToArray());

    /// <summary>The <c>images</c> list of a COCO file (captions and instances alike).</summary>
    private static JsonArray CocoImages(IEnumerable<ImageItem> items) => Array(items.Select(i => (JsonNode)new JsonObject
    {
        ["license"] = 1, ["file_name"] = i.File, ["coco_url"] = "", ["height"] = Scene.Canvas, ["width"] = Scene.Canvas,
        ["date_captured"] = "2026-11-27 00:00:00", ["flickr_url"] = "", ["id"] = i.Id,
    }));

    /// <summary>The <c>licenses</c> list of a COCO file.</summary>
    private static JsonArray CocoLicenses() =>
        new(new JsonObject { ["url"] = "http://creativecommons.org/licenses/by/4.0/", ["id"] = 1, ["name"] = "CC BY 4.0" });

    /// <summary>
    /// The object categories of the COCO instances files: one per description, "&lt;size&gt; &lt;color&gt; &lt;shape&gt;",
    /// with the shape as its supercategory; ids from 1 in size, colour, shape order.
    /// </summary>
    public static IReadOnlyList<(int Id, string Name, string Supercategory)> Categories { get; } =
        (from size in Enum.GetValues<ObjectSize>()
         from colour in Scene.Colours
         from shape in Scene.Shapes
         select (Size: size, Colour: colour, Shape: shape))
        .Select((k, i) => (i + 1, Language.Describe(new SceneObject(k.Shape, k.Colour, k.Size, 0, 0, 0, 0, 0)), Language.Word(k.Shape)))
        .ToList();

    private static int CategoryId(SceneObject o) => Categories.First(c => c.Name == Language.Describe(o)).Id;

    /// <summary>
    /// COCO instances (the object-annotation format of COCO detection, which X-VLM's object grounding reads):
    /// each object's bounding box [x, y, w, h] in pixels, its area, a four-corner polygon and its category.
    /// </summary>
    private static JsonObject Instances(ImageItem[] items) => new()
    {
        ["info"] = Info("ShapesWorld objects (COCO instances format)"),
        ["licenses"] = CocoLicenses(),
        ["images"] = CocoImages(items),
        ["annotations"] = Array(items.SelectMany(i => i.Scene.Objects.Select((o, k) =>
        {
            double x = Math.Round(o.X - o.Side / 2, 2), y = Math.Round(o.Y - o.Side / 2, 2), side = Math.Round(o.Side, 2);
            return (JsonNode)new JsonObject
            {
                ["segmentation"] = new JsonArray(new JsonArray(x, y, x + side, y, x + side, y + side, x, y + side)),
                ["area"] = Math.Round(side * side, 2),
                ["iscrowd"] = 0,
                ["image_id"] = i.Id,
                ["bbox"] = new JsonArray(x, y, side, side),
                ["category_id"] = CategoryId(o),
                ["id"] = i.Id * 10 + k,
            };
        }))),
        ["categories"] = Array(Categories.Select(c => (JsonNode)new JsonObject
        {
            ["supercategory"] = c.Supercategory, ["id"] = c.Id, ["name"] = c.Name,
        })),
    };

    private static void WriteAnnotations(string outDir, Dictionary<string, ImageItem[]> images, Dictionary<string, PairItem[]> pairs)
    {
        var annotations = Path.Combine(outDir, "annotations");
        var finetune = Path.Combine(outDir, "finetune");
        var karpathy = new JsonArray();
        int imgid = 0;
        var answerList = new SortedSet<string>(StringComparer.Ordinal);

        foreach (var split in Splits)
        {
            var items = images[split];
            // COCO captions
            var coco = new JsonObject
            {
                ["info"] = Info("ShapesWorld captions"),
                ["images"] = CocoImages(items),
                ["licenses"] = CocoLicenses(),
                ["annotations"] = Array(items.SelectMany(i => i.Captions.Select((c, k) => (JsonNode)new JsonObject
                {
                    ["image_id"] = i.Id, ["id"] = i.Id * 10 + k, ["caption"] = c,
                }))),
            };
            PyJson.WriteFileAtomic(Path.Combine(annotations, $"captions_{split}.json"), PyJson.Serialize(coco));

            foreach (var i in items)
            {
                karpathy.Add(new JsonObject
                {
                    ["filepath"] = split,
                    ["sentids"] = Array(Enumerable.Range(0, 5).Select(k => (JsonNode)(i.Id * 10 + k))),
                    ["filename"] = i.File,
                    ["imgid"] = imgid,
                    ["split"] = split,
                    ["sentences"] = Array(i.Captions.Select((c, k) => (JsonNode)new JsonObject
                    {
                        ["tokens"] = Array(c.Replace(",", "").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(t => (JsonNode)t)),
                        ["raw"] = c, ["imgid"] = imgid, ["sentid"] = i.Id * 10 + k,
                    })),
                    ["cocoid"] = i.Id,
                });
                imgid++;
            }

            // COCO instances: every object's box, its category the object's description
            PyJson.WriteFileAtomic(Path.Combine(annotations, $"instances_{split}.json"), PyJson.Serialize(Instances(items)));

            // VQAv2
            var questions = items.SelectMany(i => i.Questions.Select((q, k) => (Image: i, Q: q, Id: i.Id * 1000 + k))).ToList();
            foreach (var q in questions) answerList.Add(q.Q.Answer);
            var questionFile = new JsonObject
            {
                ["info"] = Info("ShapesWorld VQA questions (VQAv2 format)"),
                ["task_type"] = "Open-Ended",
                ["data_type"] = "mscoco",
                ["license"] = License(),
                ["data_subtype"] = split,
                ["questions"] = Array(questions.Select(q => (JsonNode)new JsonObject
                {
                    ["image_id"] = q.Image.Id, ["question"] = q.Q.Question, ["question_id"] = q.Id,
                })),
            };
            PyJson.WriteFileAtomic(Path.Combine(annotations, $"v2_OpenEnded_mscoco_{split}_questions.json"), PyJson.Serialize(questionFile));
            var annotationFile = new JsonObject
            {
                ["info"] = Info("ShapesWorld VQA annotations (VQAv2 format)"),
                ["license"] = License(),
                ["data_subtype"] = split,
                ["annotations"] = Array(questions.Select(q => (JsonNode)new JsonObject
                {
                    ["question_type"] = q.Q.QuestionType,
                    ["multiple_choice_answer"] = q.Q.Answer,
                    ["answers"] = Array(Enumerable.Range(1, 10).Select(a => (JsonNode)new JsonObject
                    {
                        ["answer"] = q.Q.Answer, ["answer_confidence"] = "yes", ["answer_id"] = a,
                    })),
                    ["image_id"] = q.Image.Id,
                    ["answer_type"] = q.Q.AnswerType,
                    ["question_id"] = q.Id,
                })),
                ["data_type"] = "mscoco",
            };
            PyJson.WriteFileAtomic(Path.Combine(annotations, $"v2_mscoco_{split}_annotations.json"), PyJson.Serialize(annotationFile));

            // NLVR2 JSONL (the real file's field names, a subset of its fields)
            var lines = new StringBuilder();
            foreach (var p in pairs[split])
            {
                lines.Append(PyJson.Serialize(new JsonObject
                {
                    ["sentence"] = p.Sentence,
                    ["left_url"] = $"nlvr2/images/{split}/{split}-{p.Index}-0-img0.png",
                    ["label"] = p.Label ? "True" : "False",
                    ["right_url"] = $"nlvr2/images/{split}/{split}-{p.Index}-0-img1.png",
                    ["identifier"] = $"{split}-{p.Index}-0-0",
                })).Append('\n');
            }
            PyJson.WriteFileAtomic(Path.Combine(outDir, "nlvr2", $"{split}.json"), lines.ToString());

            // X-VLM / ALBEF fine-tuning files (image paths relative to the output folder)
            string ImagePath(ImageItem i) => $"images/{split}/{i.File}";
            if (split == "train")
            {
                PyJson.WriteFileAtomic(Path.Combine(finetune, "coco_karpathy_train.json"), PyJson.Serialize(Array(items.SelectMany(i =>
                    i.Captions.Select(c => (JsonNode)new JsonObject { ["caption"] = c, ["image"] = ImagePath(i), ["image_id"] = $"coco_{i.Id}" })))));
            }
            else
            {
                PyJson.WriteFileAtomic(Path.Combine(finetune, $"coco_karpathy_{split}.json"), PyJson.Serialize(Array(items.Select(i =>
                    (JsonNode)new JsonObject { ["image"] = ImagePath(i), ["caption"] = Array(i.Captions.Select(c => (JsonNode)c)) }))));
                PyJson.WriteFileAtomic(Path.Combine(finetune, $"coco_karpathy_{split}_gt.json"), PyJson.Serialize(new JsonObject
                {
                    ["annotations"] = Array(items.SelectMany(i => i.Captions.Select((c, k) => (JsonNode)new JsonObject
                    {
                        ["image_id"] = i.Id, ["caption"] = c, ["id"] = i.Id * 10 + k,
                    }))),
                    ["images"] = Array(items.Select(i => (JsonNode)new JsonObject { ["id"] = i.Id })),
                }));
            }
            PyJson.WriteFileAtomic(Path.Combine(finetune, $"vqa_{split}.json"), PyJson.Serialize(Array(questions.Select(q =>
            {
                var record = new JsonObject { ["question_id"] = q.Id, ["question"] = q.Q.Question };
                if (split != "test") record["answer"] = Array(Enumerable.Repeat(q.Q.Answer, 10).Select(a => (JsonNode)a));
                record["image"] = ImagePath(q.Image);
                record["dataset"] = "vqa";
                return (JsonNode)record;
            }))));
            PyJson.WriteFileAtomic(Path.Combine(finetune, $"nlvr_{split}.json"), PyJson.Serialize(Array(pairs[split].Select(p => (JsonNode)new JsonObject
            {
                ["images"] = new JsonArray($"nlvr2/images/{split}/{split}-{p.Index}-0-img0.png", $"nlvr2/images/{split}/{split}-{p.Index}-0-img1.png"),
                ["sentence"] = p.Sentence,
                ["label"] = p.Label ? "True" : "False",
            }))));
        }

        PyJson.WriteFileAtomic(Path.Combine(annotations, "dataset_coco.json"),
            PyJson.Serialize(new JsonObject { ["images"] = karpathy, ["dataset"] = "coco" }));
        PyJson.WriteFileAtomic(Path.Combine(finetune, "answer_list.json"), PyJson.Serialize(Array(answerList.Select(a => (JsonNode)a))));

        // The word-piece vocabulary of everything the training split says (plus the captioning prompt).
        var corpus = images["train"].SelectMany(i => i.Captions.Concat(i.Questions.SelectMany(q => new[] { q.Question, q.Answer })))
            .Concat(pairs["train"].Select(p => p.Sentence)).Append("a picture of");
        Text.VocabularyBuilder.Write(Text.VocabularyBuilder.Build(corpus), Path.Combine(outDir, "vocab.txt"));
        File.WriteAllText(Path.Combine(outDir, "README.txt"),
            "ShapesWorld, generated by EfficientVlm.Fleet (vlm data generate). Layout and language: see docs/data.md in the project.\n",
            new UTF8Encoding(false));
    }
}
