using EfficientVlm.Model.Config;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Data.ShapesWorld;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Objectives;
using EfficientVlm.Model.Runtime;
using EfficientVlm.Model.Training;
using TorchSharp;

namespace EfficientVlm.Fleet.Tests.Training;

/// <summary>The object annotations, their targets and losses, and the grounded VQA stage of the CPU teacher.</summary>
[Collection(TorchCollection.Name)]
public sealed class GroundingTests(TinyDataFixture fixture) : IClassFixture<TinyDataFixture>, IDisposable
{
    private readonly string _runs = Directory.CreateTempSubdirectory("fleet-ground-").FullName;
    private readonly DeviceExecutor _executor = new(new DeviceExecutorOptions { Device = "cpu" });

    public void Dispose()
    {
        _executor.Dispose();
        Directory.Delete(_runs, recursive: true);
    }

    /// <summary>The tiny teacher with the CPU presets' conv stem and sine-cosine positions.</summary>
    public static readonly VlmConfig ConvTeacher = (TinyDataFixture.Teacher with { Stem = VisionStem.Conv, Positions = VisionPositions.SinCos, Task = VlmTask.Vqa }).Validated();

    [Fact]
    public void The_generator_writes_every_object_as_a_coco_instance_whose_category_is_its_description()
    {
        var set = InstanceReaders.ReadCoco(Path.Combine(fixture.Root, "annotations", "instances_train.json"));
        Assert.Equal(36, set.Categories.Count);
        Assert.Contains("large red circle", set.Categories.Values);
        Assert.Equal(16, set.Images.Count);
        // every object a caption lists is an instance: the list caption names each object once
        var captions = CaptionReaders.ReadCoco(Path.Combine(fixture.Root, "annotations", "captions_train.json"), Path.Combine(fixture.Root, "images", "train")).Items;
        foreach (var image in captions)
        {
            var objects = set.Images[image.ImageId].Objects;
            var listed = image.Captions[0].Replace(" and ", ", ").Split(", ").Select(s => s[(s.IndexOf(' ') + 1)..]).Order().ToList();
            Assert.Equal(listed, objects.Select(o => set.Categories[o.CategoryId]).Order().ToList());
            foreach (var o in objects)
            {
                Assert.InRange(o.Width, 8, 17);
                Assert.Equal(o.Width, o.Height);
                Assert.InRange(o.X + o.Width / 2, 64 / 6.0 - 3.01, 64 - 64 / 6.0 + 3.01); // a cell centre +- 3 px
            }
        }
    }

    [Fact]
    public void A_bad_instance_record_is_refused_with_its_file_and_record()
    {
        var path = Path.Combine(_runs, "instances_bad.json");
        File.WriteAllText(path, """
            {"images": [{"id": 7, "width": 64, "height": 64, "file_name": "a.png"}],
             "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [70, 3, 5, 5], "iscrowd": 0}],
             "categories": [{"id": 1, "name": "thing"}]}
            """);
        var e = Assert.Throws<DatasetFormatException>(() => InstanceReaders.ReadCoco(path));
        Assert.Contains("instances_bad.json", e.Message);
        Assert.Contains("outside its 64 x 64 image", e.Message);
        File.WriteAllText(path, """
            {"images": [{"id": 7, "width": 64, "height": 64}],
             "annotations": [{"id": 1, "image_id": 8, "category_id": 1, "bbox": [1, 3, 5, 5]}],
             "categories": [{"id": 1, "name": "thing"}]}
            """);
        Assert.Contains("image 8", Assert.Throws<DatasetFormatException>(() => InstanceReaders.ReadCoco(path)).Message);
    }

    [Fact]
    public void Patch_targets_mark_the_smallest_box_holding_each_patch_centre()
    {
        // 32 px image at 16 px patches: centres at (8, 8), (24, 8), (8, 24), (24, 24); the image is shown at 64 px (x2)
        var image = new ImageObjects(1, 32, 32, [new ObjectBox(5, 0, 0, 20, 20), new ObjectBox(9, 2, 2, 4, 4), new ObjectBox(7, 14, 14, 18, 18)]);
        var index = new Dictionary<int, int> { [5] = 0, [7] = 1, [9] = 2 };
        // at 64 px, patch 16: centres (8, 8) (24, 8) (40, 8) (56, 8) ... in 64 px = (4, 4) (12, 4) (20, 4) (28, 4) in the image
        var targets = Grounding.PatchTargets(image, 64, 16, index);
        Assert.Equal(16, targets.Length);
        Assert.Equal(3, targets[0]);  // (4, 4): inside both 5's and 9's box; 9's is smaller
        Assert.Equal(1, targets[1]);  // (12, 4): only 5's
        Assert.Equal(0, targets[2]);  // (20, 4): right edge of 5's box is exclusive
        Assert.Equal(2, targets[15]); // (28, 28): 7's box
        Assert.Equal(2, targets[10]); // (20, 20): 7's box holds it, 5's does not (x < 20 fails)
    }

    [Fact]
    public void The_attention_loss_is_the_mean_negative_log_mass_on_the_object_over_real_tokens()
    {
        using var scope = torch.NewDisposeScope();
        // one image, two heads, three tokens (the last is padding), a class token and four patches
        var probs = torch.tensor(new float[]
        {
            0.2f, 0.5f, 0.1f, 0.1f, 0.1f,   0f, 1f, 0f, 0f, 0f,   0.2f, 0.2f, 0.2f, 0.2f, 0.2f, // head 0
            0.2f, 0.3f, 0.3f, 0.1f, 0.1f,   0f, 0f, 1f, 0f, 0f,   0.2f, 0.2f, 0.2f, 0.2f, 0.2f, // head 1
        }).view(1, 2, 3, 5);
        var padding = torch.tensor(new long[] { 1, 1, 0 }).view(1, 3);
        var inside = torch.tensor(new float[] { 1, 1, 0, 0 }).view(1, 4);     // the object covers the first two patches
        var loss = Grounding.AttentionLoss(probs, padding, inside, torch.ones(1)).item<float>();
        // token 0: mean mass (0.6 + 0.6) / 2 = 0.6; token 1: (1 + 1) / 2 = 1
        Assert.Equal((float)(-Math.Log(0.6) - Math.Log(1.0)) / 2, loss, 5);
        Assert.Equal(0f, Grounding.AttentionLoss(probs, padding, inside, torch.zeros(1)).item<float>());

        var box = new ObjectBox(1, 8, 8, 8, 8);                                  // at 64 px, patch 8: holds the centre (12, 12) only
        var cells = Grounding.PatchesInside(box, 64, 64, 64, 8);
        Assert.Equal(1f, cells.Sum());
        Assert.Equal(1f, cells[1 * 8 + 1]);
    }

    [Fact]
    public void Generalised_iou_is_one_for_equal_boxes_and_below_zero_for_distant_ones()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.tensor(new float[] { 0.5f, 0.5f, 0.2f, 0.2f, 0.2f, 0.2f, 0.2f, 0.2f, 0.25f, 0.5f, 0.5f, 1f }).view(3, 4);
        var b = torch.tensor(new float[] { 0.5f, 0.5f, 0.2f, 0.2f, 0.8f, 0.8f, 0.2f, 0.2f, 0.75f, 0.5f, 0.5f, 1f }).view(3, 4);
        var giou = Grounding.GeneralizedIou(Grounding.Corners(a), Grounding.Corners(b)).data<float>().ToArray();
        Assert.Equal(1f, giou[0], 5);
        // 0.2-wide boxes at 0.1..0.3 and 0.7..0.9: no overlap, hull 0.8 x 0.8 = 0.64, union 0.08
        Assert.Equal(-(0.64f - 0.08f) / 0.64f, giou[1], 5);
        // side by side, touching: IoU 0, hull equals the union
        Assert.Equal(0f, giou[2], 5);
        var (l1, loss) = Grounding.BoxLoss(a, a);
        Assert.Equal(0f, l1.item<float>());
        Assert.Equal(0f, loss.item<float>(), 5);
    }

    [Fact]
    public void The_conv_stem_and_sine_cosine_positions_give_the_patch_grid_and_shrink_and_reload_exactly()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(4);
        using var model = new VlmModel(ConvTeacher);
        model.eval();
        var names = model.named_parameters().Select(p => p.name).ToList();
        Assert.Contains("vision.stem.convs.0.weight", names);
        Assert.DoesNotContain("vision.conv1.weight", names);
        var positions = model.named_parameters().Single(p => p.name == "vision.positional_embedding").parameter;
        Assert.Equal(0f, positions[0].abs().max().item<float>());                  // class token row
        Assert.Equal(1f, positions[1].narrow(0, 8, 8).max().item<float>(), 5);      // cos(0) of row 0
        var images = torch.randn(2, 3, ConvTeacher.ImageSize, ConvTeacher.ImageSize);
        var tokens = model.EncodeImage(images).Last;
        Assert.Equal(new long[] { 2, ConvTeacher.ImageTokens, ConvTeacher.Hidden }, tokens.shape);

        var keep = new EfficientVlm.Model.Pruning.ModelKeep
        {
            Vision = [new EfficientVlm.Model.Pruning.LayerKeep([0, 2], [], [1, 5, 9]), new EfficientVlm.Model.Pruning.LayerKeep([1], [], [0, 1, 2, 3])],
        };
        using var shrunk = EfficientVlm.Model.Pruning.Shrinker.Shrink(model, keep);
        var path = Path.Combine(_runs, "conv-shrunk");
        EfficientVlm.Model.Checkpoints.Checkpoint.Save(shrunk, path);
        using var reloaded = EfficientVlm.Model.Checkpoints.Checkpoint.Load(path);
        reloaded.eval();
        Assert.Equal(VisionStem.Conv, reloaded.Config.Stem);
        Assert.Equal(0f, shrunk.EncodeImage(images).Last.sub(reloaded.EncodeImage(images).Last).abs().max().item<float>());
    }

    [Fact]
    public async Task The_grounded_vqa_stage_lowers_every_term_and_resumes_with_its_heads()
    {
        var data = fixture.Data(ConvTeacher);
        var options = new TrainerOptions { Epochs = 12, LearningRate = 2e-3, CheckpointEvery = 0, Seed = 3, Decay = LrDecay.Cosine };
        torch.manual_seed(6);
        using var model = new VlmModel(ConvTeacher);
        var reported = new List<int>();
        var stage = new GroundedVqaStage(model, data, 8, 1, new GroundingWeights(Attention: 1.0, Mlm: 1.0), onValidation: s => reported.Add(s.Count));
        var parts = new List<IReadOnlyDictionary<string, double>>();
        var result = await new Trainer<GroundedVqaBatchData>(stage, options, _executor, Path.Combine(_runs, "grounded"))
            .RunAsync(new Progress<TrainingProgress>(p => { lock (parts) parts.Add(p.Parts); }));
        Assert.Equal(12 * stage.BatchesPerEpoch, result.Steps);
        Assert.Equal(12, reported.Count);
        Assert.True(reported[0] > 0);
        double First(string k) => parts.Take(3).Average(p => p[k]);
        double Last(string k) => parts.TakeLast(3).Average(p => p[k]);
        lock (parts)
            foreach (var k in new[] { "vqa", "patch", "attn", "l1", "mlm" })
                Assert.True(Last(k) < First(k) * 0.9, $"{k}: {First(k):0.000} -> {Last(k):0.000}");
        Assert.True(File.Exists(Path.Combine(_runs, "grounded", "last", "grounding-heads.safetensors")));
    }
}
