using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Pruning;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace EfficientVlm.Fleet.Tests.Model;

[Collection(TorchCollection.Name)]
public sealed class CheckpointTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("fleet-ckpt-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static Tensor Fused(VlmModel model, Tensor images, Tensor ids, Tensor padding)
    {
        var image = model.EncodeImage(images).Last;
        return model.Fuse(model.EncodeText(ids, padding).Last, padding, image).Last;
    }

    [Fact]
    public void A_shrunk_model_saves_and_reloads_by_itself_with_identical_outputs()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(41);
        using var model = new VlmModel(Presets.Tiny);
        model.eval();
        var keep = new ModelKeep
        {
            Vision = [new LayerKeep([0, 2], [], [1, 5, 9]), new LayerKeep([], [], [0, 1, 2, 3])],
            Fusion = [new LayerKeep([1], [0, 3], []), new LayerKeep([0, 1, 2, 3], [2], [7])],
        };
        using var shrunk = Shrinker.Shrink(model, keep);
        var path = Path.Combine(_folder, "variant");
        var hash = Checkpoint.Save(shrunk, path);
        var again = Checkpoint.Save(shrunk, path); // overwrite in place
        Assert.Equal(hash, again);
        Assert.Equal(64, hash.Length);
        Assert.Equal(["variant"], Directory.GetFileSystemEntries(_folder).Select(Path.GetFileName)); // no temporary folders left

        using var reloaded = Checkpoint.Load(path);
        reloaded.eval();
        Assert.Equal(shrunk.Config, reloaded.Config); // the pruned shape came back from config.json
        Assert.Equal(2, reloaded.Config.Pruned!.Vision![0].Heads);
        var images = torch.randn(2, 3, 24, 24);
        var ids = torch.randint(5, 61, new long[] { 2, 6 });
        var padding = torch.ones(2, 6, dtype: ScalarType.Int64);
        Assert.Equal(0f, Fused(shrunk, images, ids, padding).sub(Fused(reloaded, images, ids, padding)).abs().max().item<float>());
    }

    [Fact]
    public void Loading_something_that_is_not_a_fitting_checkpoint_says_what_is_wrong()
    {
        var empty = Path.Combine(_folder, "empty");
        Directory.CreateDirectory(empty);
        Assert.Contains("is not a checkpoint", Assert.Throws<InvalidDataException>(() => Checkpoint.Load(empty)).Message);

        using var model = new VlmModel(Presets.Tiny);
        var path = Path.Combine(_folder, "tiny");
        Checkpoint.Save(model, path);
        File.WriteAllText(Path.Combine(path, Checkpoint.ConfigFile), (Presets.Tiny with { Intermediate = 40 }).ToJson());
        var error = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(path));
        Assert.Contains("does not fit", error.Message);
        Assert.Contains("ffn.fc1.weight", error.Message);

        File.WriteAllText(Path.Combine(path, Checkpoint.ConfigFile), "{ \"hidden\": 30, \"heads\": 4 }");
        Assert.Contains("divisible", Assert.Throws<InvalidDataException>(() => Checkpoint.Load(path)).Message);
    }

    /// <summary>Reference (X-VLM / EfficientVLM) names for the tiny model, written out by hand.</summary>
    private static Dictionary<string, string> ReferenceNamesForTiny()
    {
        var map = new Dictionary<string, string>
        {
            ["vision_encoder.class_embedding"] = "vision.class_embedding",
            ["vision_encoder.patch_embed.weight"] = "vision.conv1.weight",
            ["vision_encoder.pos_embed.weight"] = "vision.positional_embedding",
            ["text_encoder.embeddings.word_embeddings.weight"] = "embeddings.word_embeddings.weight",
            ["text_encoder.embeddings.position_embeddings.weight"] = "embeddings.position_embeddings.weight",
            ["text_encoder.embeddings.token_type_embeddings.weight"] = "embeddings.token_type_embeddings.weight",
            ["temp"] = "temp",
            ["text_encoder.cls.predictions.bias"] = "mlm_bias",
        };
        foreach (var wb in new[] { "weight", "bias" })
        {
            map[$"vision_encoder.pre_layrnorm.{wb}"] = $"vision.ln_pre.{wb}";
            map[$"vision_encoder.post_layernorm.{wb}"] = $"vision.ln_post.{wb}";
            map[$"text_encoder.embeddings.LayerNorm.{wb}"] = $"embeddings.layer_norm.{wb}";
            map[$"vision_proj.{wb}"] = $"vision_proj.{wb}";
            map[$"text_proj.{wb}"] = $"text_proj.{wb}";
            map[$"itm_head.0.{wb}"] = $"itm_dense.{wb}";
            map[$"itm_head.1.{wb}"] = $"itm_norm.{wb}";
            map[$"itm_head.3.{wb}"] = $"itm_out.{wb}";
            map[$"text_encoder.cls.predictions.transform.dense.{wb}"] = $"mlm_dense.{wb}";
            map[$"text_encoder.cls.predictions.transform.LayerNorm.{wb}"] = $"mlm_norm.{wb}";
            for (int i = 0; i < 2; i++)
            {
                var v = $"vision_encoder.encoder.layers.{i}";
                map[$"{v}.self_attn.q_proj.{wb}"] = $"vision.layers.{i}.attn.query.{wb}";
                map[$"{v}.self_attn.k_proj.{wb}"] = $"vision.layers.{i}.attn.key.{wb}";
                map[$"{v}.self_attn.v_proj.{wb}"] = $"vision.layers.{i}.attn.value.{wb}";
                map[$"{v}.self_attn.out_proj.{wb}"] = $"vision.layers.{i}.attn.output.{wb}";
                map[$"{v}.layer_norm1.{wb}"] = $"vision.layers.{i}.ln_1.{wb}";
                map[$"{v}.layer_norm2.{wb}"] = $"vision.layers.{i}.ln_2.{wb}";
                map[$"{v}.mlp.fc1.{wb}"] = $"vision.layers.{i}.mlp.fc1.{wb}";
                map[$"{v}.mlp.fc2.{wb}"] = $"vision.layers.{i}.mlp.fc2.{wb}";
            }
            // tiny: 1 text layer (reference layer 0) then 2 fusion layers (reference layers 1 and 2)
            for (int i = 0; i < 3; i++)
            {
                var t = $"text_encoder.bert.encoder.layer.{i}";
                var ours = i == 0 ? "text.layers.0" : $"fusion.layers.{i - 1}";
                map[$"{t}.attention.self.query.{wb}"] = $"{ours}.self_attn.query.{wb}";
                map[$"{t}.attention.self.key.{wb}"] = $"{ours}.self_attn.key.{wb}";
                map[$"{t}.attention.self.value.{wb}"] = $"{ours}.self_attn.value.{wb}";
                map[$"{t}.attention.output.dense.{wb}"] = $"{ours}.self_attn.output.{wb}";
                map[$"{t}.attention.output.LayerNorm.{wb}"] = $"{ours}.self_ln.{wb}";
                map[$"{t}.intermediate.dense.{wb}"] = $"{ours}.ffn.fc1.{wb}";
                map[$"{t}.output.dense.{wb}"] = $"{ours}.ffn.fc2.{wb}";
                map[$"{t}.output.LayerNorm.{wb}"] = $"{ours}.ffn_ln.{wb}";
                if (i == 0) continue;
                map[$"{t}.crossattention.self.query.{wb}"] = $"{ours}.cross_attn.query.{wb}";
                map[$"{t}.crossattention.self.key.{wb}"] = $"{ours}.cross_attn.key.{wb}";
                map[$"{t}.crossattention.self.value.{wb}"] = $"{ours}.cross_attn.value.{wb}";
                map[$"{t}.crossattention.output.dense.{wb}"] = $"{ours}.cross_attn.output.{wb}";
                map[$"{t}.crossattention.output.LayerNorm.{wb}"] = $"{ours}.cross_ln.{wb}";
            }
        }
        return map;
    }

    [Fact]
    public void A_state_dict_with_the_reference_names_imports_completely_and_reproduces_the_model()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(42);
        using var original = new VlmModel(Presets.Tiny);
        original.eval();
        var ours = original.state_dict();
        var names = ReferenceNamesForTiny();
        var reference = names.ToDictionary(kv => kv.Key, kv => ours[kv.Value]);
        reference["vision_encoder.position_ids"] = torch.arange(10L).unsqueeze(0);           // a buffer we drop
        reference["bbox_head.0.weight"] = torch.zeros(64, 32);                              // a head we do not have
        reference["text_encoder.cls.predictions.decoder.weight"] = ours["embeddings.word_embeddings.weight"]; // tied
        var file = Path.Combine(_folder, "reference.safetensors");
        Safetensors.SaveStateDict(file, reference.ToDictionary(kv => kv.Key, kv => kv.Value.contiguous()));

        torch.manual_seed(999);
        using var imported = new VlmModel(Presets.Tiny);
        imported.eval();
        var report = ReferenceImporter.ImportFile(imported, file);
        Assert.True(report.Complete, $"missing: {string.Join(", ", report.Missing)}; mismatches: {string.Join(", ", report.ShapeMismatches)}");
        Assert.Equal(ours.Count, report.Loaded.Count);
        Assert.Equal(["bbox_head.0.weight", "text_encoder.cls.predictions.decoder.weight", "vision_encoder.position_ids"], report.Unexpected.Order());

        var images = torch.randn(2, 3, 24, 24);
        var ids = torch.randint(5, 61, new long[] { 2, 6 });
        var padding = torch.ones(2, 6, dtype: ScalarType.Int64);
        Assert.Equal(0f, Fused(original, images, ids, padding).sub(Fused(imported, images, ids, padding)).abs().max().item<float>());
    }

    [Fact]
    public void A_torch_save_state_dict_with_the_reference_names_imports_too()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(43);
        using var original = new VlmModel(Presets.Tiny);
        var ours = original.state_dict();
        var reference = ReferenceNamesForTiny().ToDictionary(kv => kv.Key, kv => ours[kv.Value].contiguous());
        var file = Path.Combine(_folder, "model_state_epoch_0.th");
        PyTorchPickler.PickleStateDict(file, reference); // the pickle format torch.save writes and torch.load reads
        torch.manual_seed(1000);
        using var imported = new VlmModel(Presets.Tiny);
        var report = ReferenceImporter.ImportFile(imported, file);
        Assert.True(report.Complete);
        Assert.True(imported.state_dict()["fusion.layers.1.cross_attn.value.weight"].equal(ours["fusion.layers.1.cross_attn.value.weight"]).all().item<bool>());

        var notAState = Path.Combine(_folder, "garbage.pth");
        File.WriteAllText(notAState, "not a pickle");
        var error = Assert.ThrowsAny<Exception>(() => ReferenceImporter.ImportFile(imported, notAState));
        Assert.IsType<InvalidDataException>(error);
    }

    [Fact]
    public void Shape_mismatches_and_missing_keys_are_reported_not_loaded()
    {
        using var scope = torch.NewDisposeScope();
        using var model = new VlmModel(Presets.Tiny);
        var reference = new Dictionary<string, Tensor>
        {
            ["vision_encoder.pos_embed.weight"] = torch.zeros(17, 32),   // another resolution
            ["temp"] = torch.tensor(0.05f),
        };
        var report = ReferenceImporter.Import(model, reference);
        Assert.False(report.Complete);
        Assert.Equal(["temp"], report.Loaded);
        Assert.Single(report.ShapeMismatches, m => m.Contains("vision.positional_embedding"));
        Assert.Contains("vision.conv1.weight", report.Missing);
        Assert.Equal(0.05f, model.Temperature.item<float>(), 5);
    }
}
