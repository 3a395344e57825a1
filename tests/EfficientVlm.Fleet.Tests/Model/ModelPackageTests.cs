using EfficientVlm.Fleet.Tests.Training;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Jobs;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Training;
using TorchSharp;

namespace EfficientVlm.Fleet.Tests.Model;

/// <summary>Model packages (what ships under models/): fp16 weights, own vocabulary and answers, a manifest checked on load.</summary>
[Collection(TorchCollection.Name)]
public sealed class ModelPackageTests(TinyDataFixture fixture) : IClassFixture<TinyDataFixture>, IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("fleet-package-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private (VlmModel Model, string Package) Packaged(string name)
    {
        torch.manual_seed(8);
        var model = new VlmModel(GroundingTests.ConvTeacher);
        model.eval();
        var package = Path.Combine(_folder, name);
        ModelPackage.Write(model, package, Path.Combine(fixture.Root, "vocab.txt"), fixture.Data(model.Config).AnswerList);
        return (model, package);
    }

    [Fact]
    public void Vocabularies_compare_piece_by_piece_whatever_the_line_endings()
    {
        var vocab = Path.Combine(fixture.Root, "vocab.txt");
        var lines = File.ReadAllLines(vocab);
        var crlf = Path.Combine(_folder, "crlf.txt");
        File.WriteAllText(crlf, string.Join("\r\n", lines));                   // Windows line endings, no final newline
        Assert.True(ModelPackage.SameVocabulary(vocab, crlf));
        var swapped = Path.Combine(_folder, "swapped.txt");
        File.WriteAllLines(swapped, [lines[^1], .. lines[1..^1], lines[0]]);  // two pieces with each other's ids
        Assert.False(ModelPackage.SameVocabulary(vocab, swapped));
        var shorter = Path.Combine(_folder, "shorter.txt");
        File.WriteAllLines(shorter, lines[..^1]);
        Assert.False(ModelPackage.SameVocabulary(vocab, shorter));
    }

    [Fact]
    public void A_package_reloads_in_fp16_and_answers_on_a_folder_with_only_a_test_split_and_no_vocabulary()
    {
        var (model, package) = Packaged("vqa");
        using var _ = model;
        Assert.Equal(["answer_list.json", "config.json", "manifest.json", "model.safetensors", "vocab.txt"],
            Directory.GetFiles(package).Select(Path.GetFileName).Order());
        using var reloaded = Checkpoint.Load(package);
        reloaded.eval();
        foreach (var ((name, a), (_, b)) in model.state_dict().Zip(reloaded.state_dict()))
        {
            var diff = a.sub(b).abs().max().item<float>();
            Assert.True(diff <= 1e-3f * Math.Max(1f, a.abs().max().item<float>()), $"{name}: fp16 round trip off by {diff}");
        }

        // a folder laid out by the spec with the test split only: no train files, no vocab.txt
        var testOnly = Path.Combine(_folder, "test-only");
        Directory.CreateDirectory(Path.Combine(testOnly, "annotations"));
        foreach (var f in new[] { "v2_OpenEnded_mscoco_test_questions.json", "v2_mscoco_test_annotations.json" })
            File.Copy(Path.Combine(fixture.Root, "annotations", f), Path.Combine(testOnly, "annotations", f));
        CopyFolder(Path.Combine(fixture.Root, "images", "test"), Path.Combine(testOnly, "images", "test"));
        var data = new TaskData(testOnly, reloaded.Config, model: package);
        Assert.Equal(ModelPackage.Answers(package), data.AnswerList);
        var scores = Pipeline.Score(reloaded, VlmTask.Vqa, data, "test", null, torch.CPU, 4);
        var original = Pipeline.Score(reloaded, VlmTask.Vqa, fixture.Data(model.Config), "test", null, torch.CPU, 4); // same ids and answers as the data folder's
        Assert.Equal(original["vqa_accuracy"], scores["vqa_accuracy"], 6);
        // without the package the folder has no vocabulary: a clear error, not other ids
        Assert.Contains("vocab.txt is missing", Assert.Throws<FileNotFoundException>(() => new TaskData(testOnly, reloaded.Config)).Message);
    }

    [Theory]
    [InlineData("model.safetensors", "truncate")]
    [InlineData("model.safetensors", "flip")]
    [InlineData("vocab.txt", "flip")]
    [InlineData("answer_list.json", "delete")]
    public void A_damaged_package_file_is_refused_naming_the_file(string file, string damage)
    {
        var (model, package) = Packaged($"{file}-{damage}");
        model.Dispose();
        var path = Path.Combine(package, file);
        var bytes = File.ReadAllBytes(path);
        switch (damage)
        {
            case "truncate": File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]); break;
            case "flip": bytes[^3] ^= 0x20; File.WriteAllBytes(path, bytes); break;
            default: File.Delete(path); break;
        }
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(package));
        Assert.Contains(file, e.Message);
        Assert.Contains(damage switch { "truncate" => "truncated", "flip" => "SHA-256", _ => "missing" }, e.Message);
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
