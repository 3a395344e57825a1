using EfficientVlm.Model.Data.Pipeline;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Data.ShapesWorld;
using EfficientVlm.Model.Images;
using EfficientVlm.Model.Objectives;
using EfficientVlm.Model.Training;
using EfficientVlm.Model.Text;
using TorchSharp;

namespace EfficientVlm.Fleet.Tests.Data;

public sealed class PrefetcherTests
{
    [Fact]
    public void Keeps_order_runs_ahead_on_another_thread_and_stays_bounded()
    {
        int produced = 0;
        var threads = new HashSet<int>();
        var prefetcher = new Prefetcher<int>(_ => Enumerable.Range(0, 50).Select(i =>
        {
            lock (threads) threads.Add(Environment.CurrentManagedThreadId);
            Interlocked.Increment(ref produced);
            return i;
        }), capacity: 3);
        using var e = prefetcher.GetEnumerator();
        Assert.True(e.MoveNext());
        Assert.Equal(0, e.Current);
        Thread.Sleep(200); // the producer fills the queue meanwhile, but no further than its capacity
        Assert.InRange(Volatile.Read(ref produced), 2, 1 + 3 + 1);
        var rest = new List<int>();
        while (e.MoveNext()) rest.Add(e.Current);
        Assert.Equal(Enumerable.Range(1, 49), rest);
        Assert.DoesNotContain(Environment.CurrentManagedThreadId, threads);
    }

    [Fact]
    public void A_producer_failure_reaches_the_consumer()
    {
        var prefetcher = new Prefetcher<int>(_ => Enumerable.Range(0, 10).Select(i => i < 3 ? i : throw new InvalidDataException("bad record 3")));
        var seen = new List<int>();
        var error = Assert.Throws<InvalidDataException>(() => { foreach (var i in prefetcher) seen.Add(i); });
        Assert.Equal("bad record 3", error.Message);
        Assert.Equal([0, 1, 2], seen);
    }

    [Fact]
    public void Stopping_early_stops_the_producer()
    {
        int produced = 0;
        var prefetcher = new Prefetcher<int>(ct => Enumerable.Range(0, 1_000_000).Select(i => { Interlocked.Increment(ref produced); return i; }), 2);
        Assert.Equal([0, 1, 2], prefetcher.Take(3));
        var after = Volatile.Read(ref produced);
        Thread.Sleep(100);
        Assert.Equal(after, Volatile.Read(ref produced));
        Assert.True(after < 100);
    }

    [Fact]
    public void Epoch_shuffles_are_reproducible_and_differ_between_epochs()
    {
        var items = Enumerable.Range(0, 100).ToList();
        Assert.Equal(Batching.Shuffle(items, 1, 0), Batching.Shuffle(items, 1, 0));
        Assert.NotEqual(Batching.Shuffle(items, 1, 0), Batching.Shuffle(items, 1, 1));
        Assert.Equal(items, Batching.Shuffle(items, 1, 3).Order());
        Assert.Equal([4, 4, 2], Batching.Batches(Enumerable.Range(0, 10).ToList(), 4).Select(b => b.Count));
        Assert.Equal([4, 4], Batching.Batches(Enumerable.Range(0, 10).ToList(), 4, dropLast: true).Select(b => b.Count));
    }
}

[Collection(TorchCollection.Name)]
public sealed class CollateTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("fleet-collate-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public void Generated_records_collate_into_tensors_of_the_model_shapes()
    {
        Generator.Generate(_root, 4, new GeneratorSizes { TrainImages = 8, EvalImages = 2, TrainPairs = 4, EvalPairs = 2 });
        var captions = CaptionReaders.ReadCoco(Path.Combine(_root, "annotations", "captions_train.json"), Path.Combine(_root, "images", "train")).Items;
        var vocab = Path.Combine(_root, "vocab.txt");
        VocabularyBuilder.Write(VocabularyBuilder.Build(captions.SelectMany(c => c.Captions).Append("a picture of")), vocab);
        var tokenizer = VlmTokenizer.FromVocabFile(vocab);
        var collate = new Collate(new ImageLoader(), tokenizer, imageSize: 32, maxTextLength: 24);

        using var scope = torch.NewDisposeScope();
        var pairs = captions.Take(4).Select(c => (c, c.Captions[0])).ToList();
        var batch = collate.ImageText(pairs).ToTensors(torch.CPU);
        Assert.Equal(new long[] { 4, 3, 32, 32 }, batch.Images.shape);
        Assert.Equal(batch.Ids.shape, batch.Padding.shape);
        Assert.Equal(tokenizer.Special.Cls, batch.Ids[0, 0].item<long>());

        var caption = collate.Captions(pairs, "a picture of");
        Assert.Equal(4, caption.PromptLength); // [CLS] a picture of
        Assert.All(caption.Ids, row => Assert.Equal(tokenizer.Special.Sep, row[^1]));

        var vqa = VqaReaders.ReadVqaV2(Path.Combine(_root, "annotations", "v2_OpenEnded_mscoco_train_questions.json"),
            Path.Combine(_root, "annotations", "v2_mscoco_train_annotations.json"), Path.Combine(_root, "images", "train")).Items;
        var v = collate.Vqa(vqa.Take(3).ToList());
        Assert.Equal(3, v.Answers.Length);          // ShapesWorld: ten equal answers, one distinct answer per question
        Assert.All(v.Weight, w => Assert.Equal(1f, w));
        var (images, ids, padding, answers) = v.ToTensors(torch.CPU);
        Assert.Equal(3, images.shape[0]);
        Assert.Equal(new long[] { 0, 1, 2 }, answers.Owner.data<long>().ToArray());

        var nlvr = NlvrReaders.ReadJsonl(Path.Combine(_root, "nlvr2", "train.json"), Path.Combine(_root, "nlvr2", "images")).Items;
        var n = collate.Nlvr(nlvr).ToTensors(torch.CPU);
        Assert.Equal(new long[] { 4, 3, 32, 32 }, n.Right.shape);
        Assert.Equal(2, n.Labels.sum().item<long>());
    }

    [Fact]
    public void Texts_that_are_also_captions_of_another_image_match_it()
    {
        var vocab = Path.Combine(_root, "m.txt");
        VocabularyBuilder.Write(VocabularyBuilder.Build(["two shapes on a gray background", "a red circle", "a blue square", "one circle"]), vocab);
        var collate = new Collate(new ImageLoader(), VlmTokenizer.FromVocabFile(vocab), 16, 12);
        var image = Path.Combine(_root, "m.png");
        using (var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(16, 16))
            SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, image);
        // Images 1 and 2 both have two shapes; image 3 has one. Image 1 appears twice.
        var one = new CaptionImage(1, image, ["a red circle", "two shapes on a gray background"]);
        var two = new CaptionImage(2, image, ["a blue square", "two shapes on a gray background"]);
        var three = new CaptionImage(3, image, ["one circle", "a red circle"]);
        var batch = collate.ImageText([(one, "a red circle"), (two, "two shapes on a gray background"), (three, "one circle"), (one, "two shapes on a gray background")]);
        bool[,] expected =
        {
            // text:  0 red circle, 1 two shapes (image 2), 2 one circle, 3 two shapes (image 1)
            { true,  true,  false, true },   // image 1: its own texts, and image 2's text is one of its captions
            { false, true,  false, true },   // image 2: "a red circle" is not one of its captions
            { true,  false, true,  false },  // image 3: "a red circle" is one of its captions
            { true,  true,  false, true },   // image 1 again
        };
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                Assert.True(expected[i, j] == batch.Matches[i * 4 + j], $"image row {i}, text {j}");

        using var scope = torch.NewDisposeScope();
        var matches = batch.ToTensors(torch.CPU).Matches;
        Assert.Equal(new long[] { 4, 4 }, matches.shape);
        Assert.True(matches[2, 0].item<bool>());
        Assert.False(matches[0, 2].item<bool>());
    }

    [Fact]
    public void Weights_of_disagreeing_answers_follow_their_counts()
    {
        var vocab = Path.Combine(_root, "v.txt");
        VocabularyBuilder.Write(VocabularyBuilder.Build(["down table at"]), vocab);
        var collate = new Collate(new ImageLoader(), VlmTokenizer.FromVocabFile(vocab), 16, 8);
        var image = Path.Combine(_root, "x.png");
        using (var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(16, 16))
            SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, image);
        var item = new VqaItem(1, 1, image, "down?", ["down", "down", "at table", "table", "down", "down", "down", "down", "down", "down"]);
        var batch = collate.Vqa([item]);
        Assert.Equal([0.8f, 0.1f, 0.1f], batch.Weight);
    }
}

public sealed class NlvrRepeatTests
{
    private static NlvrItem Item(string sentence) => new("train-0-0-0", sentence, true, "l.png", "r.png");

    [Fact]
    public void A_repeated_family_comes_that_many_times_and_the_rest_once()
    {
        var compare = Item("the left image contains more circles than the right image");
        var exist = Item("there is a red circle in the left image");
        var foreign = Item("the dog on the left is sleeping");
        var items = new[] { compare, exist, foreign };

        var repeated = NlvrStage.WithRepeats(items, new Dictionary<Statements.Family, int> { [Statements.Family.Compare] = 3 });

        Assert.Equal(3, repeated.Count(i => ReferenceEquals(i, compare)));
        Assert.Equal(1, repeated.Count(i => ReferenceEquals(i, exist)));
        Assert.Equal(1, repeated.Count(i => ReferenceEquals(i, foreign)));
        Assert.Same(items, NlvrStage.WithRepeats(items, null));
        Assert.Throws<ArgumentException>(() => NlvrStage.WithRepeats(items,
            new Dictionary<Statements.Family, int> { [Statements.Family.Exist] = 0 }));
    }
}

public sealed class CaptionNegativesTests
{
    [Fact]
    public void An_edited_caption_keeps_its_class_words_count_and_never_just_reorders_the_phrases()
    {
        var negatives = CaptionNegatives.ShapesWorld;
        var rng = new Random(3);
        const string list = "a small green square, a small purple square and a small purple circle";
        var seen = new HashSet<string>();
        for (int k = 0; k < 200; k++)
        {
            var edited = negatives.Edit(list, rng);
            Assert.NotNull(edited);
            Assert.NotEqual(list, edited);
            seen.Add(edited);
            // the same number of words, and the parts are not a permutation of the original's
            Assert.Equal(list.Split(' ').Length, edited.Split(' ').Length);
            Assert.NotEqual(Sorted(list), Sorted(edited));
        }
        // colours swapped between the two squares only reorders the list: not a negative; with the circle it is one
        Assert.DoesNotContain("a small purple square, a small green square and a small purple circle", seen);
        Assert.Contains("a small purple square, a small purple square and a small green circle", seen);
        Assert.True(seen.Count > 10);
        // a swap or a replacement within the one class, with "a"/"an" made to agree again
        var colours = new CaptionNegatives([["red", "orange"]]);
        var edits = Enumerable.Range(0, 50).Select(_ => colours.Edit("a red circle above an orange square", rng)!).ToHashSet();
        Assert.Equal(new HashSet<string> { "an orange circle above a red square", "an orange circle above an orange square", "a red circle above a red square" }, edits);
        Assert.Null(negatives.Edit("nothing to edit here", rng));
        Assert.Throws<ArgumentException>(() => new CaptionNegatives([["red", "blue"], ["red", "green"]]));

        static string Sorted(string caption) =>
            string.Join("|", caption.Replace(" and ", ", ").Split(", ").Order(StringComparer.Ordinal));
    }
}
