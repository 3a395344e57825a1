using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Fleet.Tests.Model;

/// <summary>Every task head: output shapes at odd tiny sizes, and its loss falls on a repeated batch.</summary>
[Collection(TorchCollection.Name)]
public sealed class TaskHeadTests
{
    private static readonly VlmConfig Tiny = Presets.Tiny;
    private const long Cls = 2, Sep = 3;

    private static (Tensor Ids, Tensor Padding) Texts(int count, int length, int seedOffset = 0)
    {
        var ids = torch.randint(5, Tiny.VocabSize, new long[] { count, length });
        ids[TensorIndex.Colon, 0] = torch.tensor(Cls);
        ids[TensorIndex.Colon, length - 1] = torch.tensor(Sep);
        return (ids, torch.ones(count, length, dtype: ScalarType.Int64));
    }

    private static float Train(VlmModel model, Func<Tensor> loss, int steps, double lr, out float first)
    {
        model.train();
        using var optimizer = torch.optim.AdamW(model.parameters(), lr: lr);
        first = float.NaN;
        float last = float.NaN;
        for (int step = 0; step < steps; step++)
        {
            using var scope = torch.NewDisposeScope();
            optimizer.zero_grad();
            var value = loss();
            value.backward();
            optimizer.step();
            last = value.item<float>();
            if (step == 0) first = last;
        }
        return last;
    }

    [Fact]
    public void A_vqa_model_converted_to_vqa_keeps_its_decoder_and_a_pretrained_one_gets_the_fusion_layers()
    {
        torch.manual_seed(37);
        using var pretrained = new VlmModel(Tiny);
        using var vqa = TaskConversion.ToTask(pretrained, VlmTask.Vqa);
        using (torch.no_grad())
            foreach (var (name, p) in vqa.named_parameters())
                if (name.StartsWith("decoder.", StringComparison.Ordinal)) p.add_(1.0); // as if trained: no longer the fusion copy
        using var again = TaskConversion.ToTask(vqa, VlmTask.Vqa, out var fresh);
        Assert.Empty(fresh);
        var before = vqa.state_dict();
        foreach (var (name, tensor) in again.state_dict()) Assert.True(tensor.allclose(before[name], 0, 0), $"{name} changed");
        // from a pre-trained model the decoder starts as the fusion layers (method.md)
        var fusion = pretrained.state_dict();
        using var fromPretrained = TaskConversion.ToTask(pretrained, VlmTask.Vqa);
        foreach (var (name, tensor) in fromPretrained.state_dict().Where(kv => kv.Key.StartsWith("decoder.layers.0.", StringComparison.Ordinal)))
            if (fusion.TryGetValue(name.Replace("decoder.", "fusion."), out var source) && source.shape.SequenceEqual(tensor.shape))
                Assert.True(tensor.allclose(source, 0, 0), $"{name} is not fusion layer 0's");
    }

    [Fact]
    public void Vqa_decoder_shapes_loss_and_ranking()
    {
        torch.manual_seed(31);
        using var pretrained = new VlmModel(Tiny);
        using var model = TaskConversion.ToTask(pretrained, VlmTask.Vqa);
        var images = torch.randn(3, 3, Tiny.ImageSize, Tiny.ImageSize);
        var (questions, qPad) = Texts(3, 6);
        // Answer list: 5 answers of 1-2 word pieces; question b's answer is list entry b.
        var answerIds = torch.tensor(new long[] { Cls, 10, Sep, 0, Cls, 11, 12, Sep, Cls, 13, Sep, 0, Cls, 14, Sep, 0, Cls, 10, 15, Sep }).view(5, 4);
        var answerPad = answerIds.ne(0).to(ScalarType.Int64);
        answerPad[TensorIndex.Colon, 0] = torch.tensor(1L);
        var answers = new VqaAnswers(answerIds.narrow(0, 0, 3), answerPad.narrow(0, 0, 3), torch.arange(3L), torch.ones(3));

        using (torch.no_grad())
        {
            model.eval();
            var states = Vqa.EncodeQuestion(model, images, questions, qPad);
            Assert.Equal(new long[] { 3, 6, Tiny.Hidden }, states.shape);
            Assert.Equal(new long[] { 3, 4, Tiny.Hidden }, model.DecodeAnswer(answerIds.narrow(0, 0, 3), answerPad.narrow(0, 0, 3), states, qPad).Last.shape);
        }

        var last = Train(model, () => Vqa.Loss(model, images, questions, qPad, answers), 40, 2e-3, out var first);
        Assert.True(last < first * 0.3, $"VQA loss {first} -> {last}");

        using var noGrad = torch.no_grad();
        model.eval();
        var q = Vqa.EncodeQuestion(model, images, questions, qPad);
        var (best, score) = Vqa.Rank(model, q, qPad, answerIds, answerPad, k: 3);
        Assert.Equal(new long[] { 0, 1, 2 }, best.data<long>().ToArray()); // learned: question b -> answer b
        Assert.Equal(new long[] { 3 }, score.shape);
    }

    [Fact]
    public void Nlvr2_shapes_and_loss()
    {
        torch.manual_seed(32);
        using var pretrained = new VlmModel(Tiny);
        using var model = TaskConversion.ToTask(pretrained, VlmTask.Nlvr2);
        var left = torch.randn(4, 3, Tiny.ImageSize, Tiny.ImageSize);
        var right = torch.randn(4, 3, Tiny.ImageSize, Tiny.ImageSize);
        var (ids, padding) = Texts(4, 5);
        var labels = torch.tensor(new long[] { 1, 0, 0, 1 });
        using (torch.no_grad())
            Assert.Equal(new long[] { 4, 2 }, Nlvr.Logits(model, left, right, ids, padding).shape);
        var last = Train(model, () => Nlvr.Loss(model, left, right, ids, padding, labels), 30, 2e-3, out var first);
        Assert.True(last < first * 0.3, $"NLVR2 loss {first} -> {last}");
    }

    [Fact]
    public void Nlvr2_conversion_copies_each_fusion_layer_into_both_of_its_pair()
    {
        torch.manual_seed(33);
        using var pretrained = new VlmModel(Tiny);
        using var model = TaskConversion.ToTask(pretrained, VlmTask.Nlvr2);
        var source = pretrained.state_dict();
        var target = model.state_dict();
        for (int j = 0; j < Tiny.FusionLayers; j++)
        {
            var original = source[$"fusion.layers.{j}.ffn.fc1.weight"];
            Assert.True(original.equal(target[$"fusion.layers.{2 * j}.ffn.fc1.weight"]).all().item<bool>());
            Assert.True(original.equal(target[$"fusion.layers.{2 * j + 1}.ffn.fc1.weight"]).all().item<bool>());
            Assert.True(source[$"fusion.layers.{j}.cross_attn.key.weight"].equal(target[$"fusion.layers.{2 * j}.cross_attn.key.weight"]).all().item<bool>());
            Assert.False(target.ContainsKey($"fusion.layers.{2 * j + 1}.cross_attn.key.weight")); // shared with layer 2j
        }
    }

    [Fact]
    public void A_domain_pretrained_nlvr2_model_converts_as_it_is_with_a_fresh_nlvr2_head()
    {
        torch.manual_seed(35);
        using var pretrained = new VlmModel(Tiny);
        using var domain = TaskConversion.ToTask(pretrained, VlmTask.Nlvr2);
        using (torch.no_grad())
            foreach (var (name, p) in domain.named_parameters())
                if (name.StartsWith("fusion.layers.1.", StringComparison.Ordinal)) p.add_(1.0); // layer 1 has left its pair (as text assignment makes it)
        using var model = TaskConversion.ToTask(domain, VlmTask.Nlvr2, out var fresh);
        var source = domain.state_dict();
        foreach (var (name, tensor) in model.state_dict())
        {
            if (name.StartsWith("nlvr_", StringComparison.Ordinal)) Assert.Contains(name, fresh);
            else Assert.True(source[name].equal(tensor).all().item<bool>(), name);
        }
        Assert.Equal(["nlvr_dense.bias", "nlvr_dense.weight", "nlvr_norm.bias", "nlvr_norm.weight", "nlvr_out.bias", "nlvr_out.weight"], fresh.Order());
        Assert.Throws<ArgumentException>(() => TaskConversion.ToTask(domain, VlmTask.Vqa));
    }

    [Fact]
    public void Retrieval_ranks_by_itm_inside_the_itc_top_k()
    {
        torch.manual_seed(34);
        using var model = new VlmModel(Tiny with { Task = VlmTask.Retrieval });
        var images = torch.randn(3, 3, Tiny.ImageSize, Tiny.ImageSize);
        var (ids, padding) = Texts(6, 5);
        var imageIds = torch.tensor(new long[] { 0, 0, 1, 1, 2, 2 });
        var batch = new EfficientVlm.Model.Objectives.PretrainBatch(images.index_select(0, imageIds), ids, padding, imageIds);
        var tokens = new EfficientVlm.Model.Objectives.SpecialTokens(0, 1, Cls, Sep, 4, Tiny.VocabSize);
        var last = Train(model, () =>
        {
            var r = EfficientVlm.Model.Objectives.Pretraining.Run(model, batch, tokens, withMlm: false);   // as RetrievalStage
            return r.Itc.add(r.Itm);
        }, 100, 2e-3, out var first);
        Assert.True(last < first * 0.5, $"ITC+ITM {first} -> {last}");

        using var noGrad = torch.no_grad();
        model.eval();
        var gallery = new Retrieval.Gallery(model.EncodeImage(images).Last, model.EncodeText(ids, padding).Last, padding);
        var textsForImages = Retrieval.RankTextsForImages(model, gallery, k: 4);
        var imagesForTexts = Retrieval.RankImagesForTexts(model, gallery, k: 2);
        Assert.Equal(3, textsForImages.Length);
        Assert.All(textsForImages, r => Assert.Equal(new long[] { 0, 1, 2, 3, 4, 5 }, r.Order().ToArray())); // a permutation
        Assert.All(imagesForTexts, r => Assert.Equal(new long[] { 0, 1, 2 }, r.Order().ToArray()));
        for (int i = 0; i < 3; i++) Assert.Contains(textsForImages[i][0], new long[] { 2 * i, 2 * i + 1 }); // trained: own caption first
        for (int t = 0; t < 6; t++) Assert.Equal(t / 2, imagesForTexts[t][0]);
    }

    [Theory]
    [InlineData(RetrievalScore.Itm)]
    [InlineData(RetrievalScore.ItmPlusItc)]
    public void Retrieval_rescores_the_itc_top_k_by_its_rule_and_keeps_itc_order_below(RetrievalScore rule)
    {
        torch.manual_seed(36);
        using var model = new VlmModel(Tiny with { Task = VlmTask.Retrieval });
        model.eval();
        using var noGrad = torch.no_grad();
        var images = torch.randn(2, 3, Tiny.ImageSize, Tiny.ImageSize);
        var (ids, padding) = Texts(7, 5);
        var gallery = new Retrieval.Gallery(model.EncodeImage(images).Last, model.EncodeText(ids, padding).Last, padding);
        const int k = 4;
        var ranked = Retrieval.RankTextsForImages(model, gallery, k, rule);

        // by hand: ITC similarity, its top k, each pair through the fusion and the ITM head one at a time
        var sim = model.ImageEmbedding(gallery.ImageTokens).matmul(model.TextEmbedding(gallery.TextStates).t());  // (2, 7)
        var temperature = model.Temperature.item<float>();
        for (int i = 0; i < 2; i++)
        {
            var itcOrder = sim[i].argsort(descending: true).data<long>().ToArray();
            var expected = itcOrder.Take(k).OrderByDescending(t =>
            {
                var logits = model.ItmLogits(model.Fuse(gallery.TextStates[t].unsqueeze(0), gallery.TextPadding[t].unsqueeze(0),
                    gallery.ImageTokens[i].unsqueeze(0)).Last)[0].data<float>().ToArray();
                return rule == RetrievalScore.Itm ? logits[1] : logits[1] - logits[0] + sim[i, t].item<float>() / temperature;
            }).Concat(itcOrder.Skip(k)).ToArray();
            Assert.Equal(expected, ranked[i]);
        }
    }

    [Fact]
    public void Retrieval_score_names_parse_and_an_unknown_one_is_refused()
    {
        Assert.Equal(RetrievalScore.Itm, Retrieval.ParseScore("ITM"));
        Assert.Equal(RetrievalScore.ItmPlusItc, Retrieval.ParseScore(" itm+itc "));
        Assert.Contains("itm or itm+itc", Assert.Throws<ArgumentException>(() => Retrieval.ParseScore("itc")).Message);
    }

    [Fact]
    public void Captioning_learns_a_caption_and_beam_search_returns_it()
    {
        torch.manual_seed(35);
        using var model = new VlmModel(Tiny with { Task = VlmTask.Captioning });
        var images = torch.randn(2, 3, Tiny.ImageSize, Tiny.ImageSize);
        // [CLS] prompt(20, 21) caption [SEP]: image 0 -> 30 31 32 33 34 35, image 1 -> 40 41 42 43 44 45
        var ids = torch.tensor(new long[] { Cls, 20, 21, 30, 31, 32, 33, 34, 35, Sep, Cls, 20, 21, 40, 41, 42, 43, 44, 45, Sep }).view(2, 10);
        var padding = torch.ones(2, 10, dtype: ScalarType.Int64);
        using (torch.no_grad())
            Assert.Equal(new long[] { 2, 10, Tiny.VocabSize }, Captioning.NextTokenLogits(model, model.EncodeImage(images).Last, ids, padding).shape);
        var last = Train(model, () => Captioning.Loss(model, images, ids, padding, promptLength: 3), 80, 3e-3, out var first);
        Assert.True(last < first * 0.5, $"captioning loss {first} -> {last}");

        using var noGrad = torch.no_grad();
        model.eval();
        var tokens = model.EncodeImage(images).Last;
        var caption0 = Captioning.Generate(model, tokens.narrow(0, 0, 1), [Cls, 20, 21], Sep, new BeamSettings(3, 10, 5));
        var caption1 = Captioning.Generate(model, tokens.narrow(0, 1, 1), [Cls, 20, 21], Sep, new BeamSettings(3, 10, 5));
        Assert.Equal(new long[] { 30, 31, 32, 33, 34, 35 }, caption0);
        Assert.Equal(new long[] { 40, 41, 42, 43, 44, 45 }, caption1);
        // both images' beams decoded together give each image's own search
        var together = Captioning.GenerateBatch(model, tokens, [Cls, 20, 21], Sep, new BeamSettings(3, 10, 5));
        Assert.Equal([caption0, caption1], together);
        // min length is enforced even when the model would stop at once
        var forced = Captioning.Generate(model, tokens.narrow(0, 0, 1), [Cls, 20, 21, 30, 31, 32, 33, 34, 35], Sep, new BeamSettings(3, 8, 2));
        Assert.True(forced.Length >= 2);
    }
}
