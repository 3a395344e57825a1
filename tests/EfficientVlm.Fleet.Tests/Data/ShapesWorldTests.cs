using System.Security.Cryptography;
using EfficientVlm.Fleet.Tests.Infrastructure;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Data.ShapesWorld;

namespace EfficientVlm.Fleet.Tests.Data;

public sealed class ShapesWorldTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("fleet-shapes-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static SceneObject At(Shape shape, Colour colour, ObjectSize size, int row, int column) =>
        new(shape, colour, size, row, column, (column + 0.5) * Scene.Cell, (row + 0.5) * Scene.Cell, size == ObjectSize.Small ? 9 : 15);

    private static readonly GeneratorSizes Small = new() { TrainImages = 40, EvalImages = 12, TrainPairs = 20, EvalPairs = 10 };

    [Fact]
    public void The_second_renderer_draws_the_same_scenes_with_other_pixels_and_the_same_text()
    {
        string a = Path.Combine(_folder, "coverage"), b = Path.Combine(_folder, "supersampled");
        Generator.Generate(a, 5, Small);
        Generator.Generate(b, 5, Small, style: RenderStyle.Supersampled);
        foreach (var file in new[] { "annotations/captions_test.json", "annotations/v2_OpenEnded_mscoco_test_questions.json",
                     "annotations/v2_mscoco_test_annotations.json", "annotations/instances_test.json", "nlvr2/test.json", "vocab.txt" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(a, file)), File.ReadAllBytes(Path.Combine(b, file)));
        var image = Path.Combine("images", "test", $"COCO_test_{Generator.ImageId("test", 0):D12}.png");
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(a, image)), File.ReadAllBytes(Path.Combine(b, image)));

        // the hard inside test agrees with the signed-distance coverage away from the outline
        var rng = new Random(9);
        foreach (var shape in Scene.Shapes)
        {
            var o = new SceneObject(shape, Colour.Red, ObjectSize.Large, 1, 1, 32.3, 31.7, 15.5);
            for (int i = 0; i < 2000; i++)
            {
                double x = 20 + 24 * rng.NextDouble(), y = 20 + 24 * rng.NextDouble();
                double c = Renderer.Coverage(o, x, y);
                if (c >= 1) Assert.True(Renderer.Inside(o, x, y), $"{shape} ({x:0.00}, {y:0.00}) is covered but not inside");
                if (c <= 0) Assert.False(Renderer.Inside(o, x, y), $"{shape} ({x:0.00}, {y:0.00}) is inside but not covered");
            }
        }
    }

    [Fact]
    public void Captions_follow_the_fixed_language()
    {
        var scene = new Scene([
            At(Shape.Circle, Colour.Red, ObjectSize.Large, 0, 0),
            At(Shape.Square, Colour.Blue, ObjectSize.Small, 2, 2),
            At(Shape.Circle, Colour.Orange, ObjectSize.Small, 1, 1),
        ]);
        var captions = Language.Captions(scene, new Random(3));
        Assert.Equal(5, captions.Length);
        // list: every object once, ", " and " and "
        Assert.Matches(@"^a (large red circle|small blue square|small orange circle), a (large red circle|small blue square|small orange circle) and a (large red circle|small blue square|small orange circle)$", captions[0]);
        Assert.Equal("three shapes on a gray background", captions[1]);
        Assert.Matches(@"^a (large red circle in the top left|small blue square in the bottom right|small orange circle in the center)$", captions[2]);
        Assert.Equal("two circles and one square", captions[4]);

        var one = new Scene([At(Shape.Circle, Colour.Orange, ObjectSize.Large, 1, 0)]);
        var single = Language.Captions(one, new Random(1));
        Assert.Equal(["a large orange circle", "one shape on a gray background", "a large orange circle in the middle left", "an orange circle", "one circle"], single);
    }

    [Fact]
    public void Relation_captions_state_a_relation_that_holds()
    {
        var scene = new Scene([At(Shape.Triangle, Colour.Green, ObjectSize.Small, 0, 2), At(Shape.Square, Colour.Yellow, ObjectSize.Large, 2, 0)]);
        for (int seed = 0; seed < 40; seed++)
        {
            var relation = Language.Captions(scene, new Random(seed))[3];
            Assert.Contains(relation, new[]
            {
                "a small green triangle above a large yellow square", "a small green triangle right of a large yellow square",
                "a large yellow square below a small green triangle", "a large yellow square left of a small green triangle",
            });
        }
        Assert.Equal("top center", Language.CellName(0, 1));
        Assert.Equal("center", Language.CellName(1, 1));
        Assert.Equal("one circle, one square and two triangles", Language.JoinList(["one circle", "one square", "two triangles"]));
    }

    [Fact]
    public void Vqa_questions_use_the_shortest_unique_description_and_the_right_types()
    {
        // two squares (blue small, red large) and one circle: "what color is the circle?" is unique by shape;
        // the squares need size: "what color is the small square?"
        var scene = new Scene([
            At(Shape.Square, Colour.Blue, ObjectSize.Small, 0, 0),
            At(Shape.Square, Colour.Red, ObjectSize.Large, 0, 2),
            At(Shape.Circle, Colour.Red, ObjectSize.Small, 2, 1),
        ]);
        var seen = new Dictionary<string, GeneratedQuestion>();
        for (int seed = 0; seed < 300; seed++)
            foreach (var q in Questions.Generate(scene, new Random(seed), 2))
                seen[q.Question] = q;

        Assert.Equal("red", seen["what color is the circle?"].Answer);
        Assert.Equal("blue", seen["what color is the small square?"].Answer);
        Assert.DoesNotContain("what color is the square?", seen.Keys);               // two squares: not unique
        Assert.Equal("square", seen["what shape is the blue object?"].Answer);
        Assert.Equal("circle", seen["what shape is the small red object?"].Answer);   // "red" alone is not unique
        Assert.Equal("bottom center", seen["where is the red circle?"].Answer);
        Assert.Equal(("2", "how many", "number"), (seen["how many squares are there?"].Answer, seen["how many squares are there?"].QuestionType, seen["how many squares are there?"].AnswerType));
        Assert.Equal("0", seen["how many triangles are there?"].Answer);
        Assert.Equal(("yes", "is there a", "yes/no"), (seen["is there a blue square?"].Answer, seen["is there a blue square?"].QuestionType, seen["is there a blue square?"].AnswerType));
        Assert.All(seen.Values.Where(q => q.Question.StartsWith("is there")), q => Assert.Equal(
            scene.Objects.Any(o => q.Question == $"is there {Language.Article($"{Language.Word(o.Colour)} {Language.Word(o.Shape)}")}?") ? "yes" : "no", q.Answer));
        Assert.Contains(seen.Values, q => q.Question == "is there an orange circle?" || q.Question.StartsWith("is there an "));
        Assert.All(seen.Keys, q => Assert.EndsWith("?", q));
    }

    [Fact]
    public void Nlvr2_statements_are_decided_from_the_scenes()
    {
        var left = new Scene([At(Shape.Circle, Colour.Red, ObjectSize.Small, 0, 0), At(Shape.Circle, Colour.Blue, ObjectSize.Large, 2, 0)]);
        var right = new Scene([At(Shape.Square, Colour.Red, ObjectSize.Small, 1, 1)]);
        var all = new Dictionary<string, bool>();
        for (int seed = 0; seed < 2000; seed++)
        {
            var s = Statements.Sample(new Random(seed));
            all[s.Sentence] = s.Holds(left, right);
        }
        Assert.True(all["the left image contains more circles than the right image"]);
        Assert.False(all["the left image contains fewer circles than the right image"]);
        Assert.True(all["both images contain a red object"]);
        Assert.False(all["both images contain a blue object"]);
        Assert.True(all["only one image contains a square"]);
        Assert.True(all["there are exactly two objects in the left image"]);
        Assert.True(all["there is exactly one object in the right image"]);
        Assert.True(all["there is a blue circle in the left image"]);
        Assert.True(all["the left image has a circle above a circle"]);
        Assert.False(all["the right image has a square above a square"]);
    }

    [Fact]
    public void Every_statement_family_is_read_back_from_its_sentences_and_real_statements_have_none()
    {
        foreach (var family in Enum.GetValues<Statements.Family>())
            for (int seed = 0; seed < 300; seed++)
            {
                var sentence = Statements.Sample(family, new Random(seed)).Sentence;
                Assert.True(Statements.FamilyOf(sentence) == family, $"'{sentence}' read back as {Statements.FamilyOf(sentence)}, not {family}");
            }
        var real = NlvrReaders.ReadJsonl(TestPaths.FormatFixture("dev.sample.jsonl"), "/nlvr2/images", requireImages: false).Items;
        Assert.NotEmpty(real);
        Assert.All(real, item => Assert.Null(Statements.FamilyOf(item.Sentence)));
        Assert.Null(Statements.FamilyOf("the left image contains more circles than the right image!"));
    }

    private static string HashFolder(string folder)
    {
        using var sha = SHA256.Create();
        foreach (var file in Directory.GetFiles(folder, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var name = System.Text.Encoding.UTF8.GetBytes(Path.GetRelativePath(folder, file));
            sha.TransformBlock(name, 0, name.Length, null, 0);
            var bytes = File.ReadAllBytes(file);
            sha.TransformBlock(bytes, 0, bytes.Length, null, 0);
        }
        sha.TransformFinalBlock([], 0, 0);
        return Convert.ToHexString(sha.Hash!);
    }

    [Fact]
    public void The_same_seed_writes_the_same_bytes_and_another_seed_does_not()
    {
        string a = Path.Combine(_folder, "a"), b = Path.Combine(_folder, "b"), c = Path.Combine(_folder, "c");
        Generator.Generate(a, 5, Small);
        Generator.Generate(b, 5, Small);
        Generator.Generate(c, 6, Small);
        Assert.Equal(HashFolder(a), HashFolder(b));
        Assert.NotEqual(HashFolder(a), HashFolder(c));
    }

    [Fact]
    public void Every_written_file_reads_back_through_the_format_readers()
    {
        var root = Path.Combine(_folder, "sw");
        var summary = Generator.Generate(root, 9, Small);
        Assert.Equal((40, 200, 80, 20), summary.Splits["train"]);
        var ann = Path.Combine(root, "annotations");

        var coco = CaptionReaders.ReadCoco(Path.Combine(ann, "captions_val.json"), Path.Combine(root, "images", "val"));
        Assert.Equal(12, coco.Items.Count);
        Assert.All(coco.Items, i => Assert.Equal(5, i.Captions.Count));
        Assert.Empty(coco.Warnings);
        var karpathy = CaptionReaders.ReadKarpathy(Path.Combine(ann, "dataset_coco.json"), Path.Combine(root, "images"), "test");
        Assert.Equal(12, karpathy.Items.Count);
        Assert.Equal(coco.Items.Select(i => i.Captions[0]).Count(), karpathy.Items.Count);

        var vqa = VqaReaders.ReadVqaV2(Path.Combine(ann, "v2_OpenEnded_mscoco_train_questions.json"),
            Path.Combine(ann, "v2_mscoco_train_annotations.json"), Path.Combine(root, "images", "train"));
        Assert.Equal(80, vqa.Items.Count);
        Assert.All(vqa.Items, q => Assert.Equal(10, q.Answers.Count));
        Assert.All(vqa.Items, q => Assert.Equal(q.ImageId * 1000, q.QuestionId / 1000 * 1000));

        var nlvr = NlvrReaders.ReadJsonl(Path.Combine(root, "nlvr2", "train.json"), Path.Combine(root, "nlvr2", "images"));
        Assert.Equal(20, nlvr.Items.Count);
        Assert.Equal(10, nlvr.Items.Count(i => i.Label));
        // every sentence appears once true and once false
        Assert.All(nlvr.Items.GroupBy(i => i.Sentence), g => Assert.Equal(g.Count(i => i.Label), g.Count(i => !i.Label)));

        var finetune = Path.Combine(root, "finetune");
        Assert.Equal(200, CaptionReaders.ReadXvlm(Path.Combine(finetune, "coco_karpathy_train.json"), root).Items.Sum(i => i.Captions.Count));
        Assert.Equal(12, CaptionReaders.ReadXvlm(Path.Combine(finetune, "coco_karpathy_test.json"), root).Items.Count);
        Assert.All(VqaReaders.ReadXvlm(Path.Combine(finetune, "vqa_test.json"), root).Items, i => Assert.Empty(i.Answers));
        Assert.Equal(10, NlvrReaders.ReadXvlm(Path.Combine(finetune, "nlvr_val.json"), root).Items.Count);
        Assert.Contains("\"yes\"", File.ReadAllText(Path.Combine(finetune, "answer_list.json")));
    }

    [Fact]
    public void Stats_count_the_splits_and_the_baselines_are_what_their_rules_give()
    {
        var root = Path.Combine(_folder, "stats");
        Generator.Generate(root, 3, Small);
        var stats = EfficientVlm.Model.Data.DatasetStats.Compute(root);
        Assert.Equal([("train", 40, 200, 80, 20, 10), ("val", 12, 60, 24, 10, 5), ("test", 12, 60, 24, 10, 5)],
            stats.Splits.Select(s => (s.Split, s.Images, s.Captions, s.Questions, s.Pairs, s.TruePairs)));
        Assert.Equal(0.5, stats.Baselines.NlvrMajority);                  // balanced labels
        Assert.True(stats.Baselines.VqaMajorityPerQuestionType >= stats.Baselines.VqaMajorityOverall);
        Assert.Equal(1.0 / 12, stats.Baselines.RandomRetrieval.ImageR1, 9); // one right image of 12
        var ceiling = stats.Baselines.ImageRetrievalCeiling;                 // count captions repeat across images
        Assert.True(ceiling.R1 < 1 && ceiling.R1 > stats.Baselines.RandomRetrieval.ImageR1, $"IR R@1 ceiling {ceiling.R1}");
        Assert.True(ceiling.R1 <= ceiling.R5 && ceiling.R5 <= ceiling.R10 && ceiling.R10 <= 1);
        Assert.Equal(80, stats.TrainAnswers.Sum(a => a.Count));
        Assert.InRange(stats.Baselines.MostFrequentCaptionCiderD, 0, 10);
    }

    [Fact]
    public void Written_json_uses_the_official_key_order_and_python_separators()
    {
        var root = Path.Combine(_folder, "fmt");
        Generator.Generate(root, 2, Small with { TrainImages = 2, EvalImages = 1, TrainPairs = 2, EvalPairs = 2 });
        var questions = File.ReadAllText(Path.Combine(root, "annotations", "v2_OpenEnded_mscoco_val_questions.json"));
        Assert.StartsWith("{\"info\": {", questions);
        Assert.Matches("\"task_type\": \"Open-Ended\", \"data_type\": \"mscoco\", \"license\": \\{.*\\}, \"data_subtype\": \"val\", \"questions\": \\[\\{\"image_id\": 500001, \"question\": ", questions);
        var annotations = File.ReadAllText(Path.Combine(root, "annotations", "v2_mscoco_val_annotations.json"));
        Assert.Matches("\"annotations\": \\[\\{\"question_type\": \"[a-z /]+\", \"multiple_choice_answer\": \"[a-z0-9 ]+\", \"answers\": \\[\\{\"answer\": ", annotations);
        Assert.EndsWith("\"data_type\": \"mscoco\"}", annotations);
        var line = File.ReadLines(Path.Combine(root, "nlvr2", "val.json")).First();
        Assert.Matches("^\\{\"sentence\": \"[a-z ]+\", \"left_url\": \"nlvr2/images/val/val-[01]-0-img0.png\", \"label\": \"(True|False)\", \"right_url\": .*\"identifier\": \"val-[01]-0-0\"\\}$", line);
    }
}
