using EfficientVlm.Fleet.Tests.Training;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Images;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Serving;
using TorchSharp;

namespace EfficientVlm.Fleet.Tests.Model;

[Collection(TorchCollection.Name)]
public sealed class ServingModelTests(TinyDataFixture data) : IClassFixture<TinyDataFixture>, IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fleet-serving-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private ServingModel Bundle(VlmTask task)
    {
        torch.manual_seed(3);
        using var model = new VlmModel(TinyDataFixture.Teacher with { Task = task });
        var folder = Path.Combine(_dir, task.ToString());
        Checkpoint.Save(model, folder);
        ModelPackage.WriteWords(folder, Path.Combine(data.Root, "vocab.txt"),
            task == VlmTask.Vqa ? data.Data(TinyDataFixture.Teacher).AnswerList : null);
        return ServingModel.Load(folder, torch.CPU);
    }

    private List<float[]> Images(int n) => Directory.GetFiles(Path.Combine(data.Root, "images", "test")).Order().Take(n)
        .Select(p => new ImageLoader().Load(File.ReadAllBytes(p), TinyDataFixture.Teacher.ImageSize)).ToList();

    [Fact]
    public void Batched_answers_equal_one_by_one_answers_for_every_served_task()
    {
        var images = Images(5);
        string[] texts = ["what color is the circle?", "how many", "is there a red square to the left of a blue triangle?", "shapes", "what is it?"];

        using (var vqa = Bundle(VlmTask.Vqa))
        {
            var batched = vqa.Vqa(images, texts, torch.CPU);
            var single = images.Select((image, i) => vqa.Vqa([image], [texts[i]], torch.CPU)[0]).ToArray();
            Assert.Equal(single, batched);
            Assert.All(batched, a => Assert.Contains(a, vqa.Answers!));
            Assert.Throws<ArgumentException>(() => vqa.Caption(images, torch.CPU));
        }
        using (var nlvr = Bundle(VlmTask.Nlvr2))
        {
            var right = images.AsEnumerable().Reverse().ToList();
            var batched = nlvr.Nlvr(images, right, texts, torch.CPU);
            var single = images.Select((image, i) => nlvr.Nlvr([image], [right[i]], [texts[i]], torch.CPU)[0]).ToArray();
            Assert.Equal(single, batched);
        }
        using (var retrieval = Bundle(VlmTask.Retrieval))
        {
            string[] names = ["a.png", "b.png", "c.png", "d.png", "e.png"];
            using var gallery = retrieval.EmbedGallery(names, images, texts, torch.CPU);
            var batched = retrieval.RankImages(gallery, texts, 3, torch.CPU);
            var single = texts.Select(t => retrieval.RankImages(gallery, [t], 3, torch.CPU)[0]).ToArray();
            Assert.Equal(single.Select(r => r.Select(x => x.Item)), batched.Select(r => r.Select(x => x.Item)));
            Assert.All(batched, r => Assert.True(r[0].Score >= r[1].Score && r[1].Score >= r[2].Score, "best first"));
            var textsForImages = retrieval.RankTexts(gallery, images, 2, torch.CPU);
            Assert.Equal(images.Select(i => retrieval.RankTexts(gallery, [i], 2, torch.CPU)[0].Select(x => x.Item)), textsForImages.Select(r => r.Select(x => x.Item)));
            Assert.All(textsForImages.SelectMany(r => r), x => Assert.Contains(x.Item, texts));
        }
        using (var captioning = Bundle(VlmTask.Captioning))
        {
            var batched = captioning.Caption(images.Take(3).ToList(), torch.CPU);
            var single = images.Take(3).Select(image => captioning.Caption([image], torch.CPU)[0]).ToArray();
            Assert.Equal(single, batched);
        }
    }

    [Theory]
    [InlineData("", "is empty")]
    [InlineData("   ", "is empty")]
    [InlineData("bell \u0007", "control character")]
    [InlineData("what \uFFFD is it", "not valid UTF-8")]
    public void Bad_text_is_refused_with_a_clear_message(string text, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => new ServingLimits().CheckText(text, "question"));
        Assert.Contains(message, e.Message);
        Assert.Equal("what is it?", new ServingLimits().CheckText("  what is it? ", "question"));
        var surrogate = Assert.Throws<ArgumentException>(() => new ServingLimits().CheckText("bad " + (char)0xD800 + " surrogate", "question"));
        Assert.Contains("not valid Unicode", surrogate.Message);
        Assert.Contains("at most 512", Assert.Throws<ArgumentException>(() => new ServingLimits().CheckText(new string('x', 513), "question")).Message);
    }
}
