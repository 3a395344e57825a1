using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Fleet.Tests.Model;

[Collection(TorchCollection.Name)]
public sealed class PretrainingTests
{
    [Fact]
    public void Itc_itm_and_mlm_losses_fall_on_a_repeated_batch()
    {
        torch.manual_seed(11);
        using var model = new VlmModel(Presets.Tiny);
        model.train();
        var batch = TinyBatches.Pretrain(Presets.Tiny);
        var samples = Pretraining.Sample(model, batch, TinyBatches.Tokens);
        using var optimizer = torch.optim.AdamW(model.parameters(), lr: 2e-3);
        var first = (0f, 0f, 0f);
        var last = (0f, 0f, 0f);
        for (int step = 0; step < 60; step++)
        {
            using var scope = torch.NewDisposeScope();
            optimizer.zero_grad();
            var result = Pretraining.Run(model, batch, TinyBatches.Tokens, samples);
            result.Total.backward();
            optimizer.step();
            model.ClampTemperature();
            var now = (result.Itc.item<float>(), result.Itm.item<float>(), result.Mlm.item<float>());
            if (step == 0) first = now;
            last = now;
        }
        Assert.True(last.Item1 < first.Item1 * 0.5, $"ITC {first.Item1} -> {last.Item1}");
        Assert.True(last.Item2 < first.Item2 * 0.5, $"ITM {first.Item2} -> {last.Item2}");
        Assert.True(last.Item3 < first.Item3 * 0.5, $"MLM {first.Item3} -> {last.Item3}");
    }

    [Fact]
    public void Itc_counts_captions_of_the_same_image_as_positives()
    {
        using var scope = torch.NewDisposeScope();
        // Two captions of image 0, one of image 1; embeddings so that each text matches its image exactly.
        var img = torch.tensor(new float[] { 1, 0, 1, 0, 0, 1 }).view(3, 2);
        var txt = img.clone();
        var ids = torch.tensor(new long[] { 0, 0, 1 });
        var loss = Pretraining.ItcLoss(img, txt, torch.tensor(0.01f), ids).item<float>();
        // Rows of image 0 split their target over two identical texts: log 2 is the floor of that row's CE.
        // Expected: i2t = (ln2 + ln2 + 0)/3, t2i the same; mean = 2 ln2 / 3.
        Assert.Equal(2 * Math.Log(2) / 3, loss, 3);
    }

    [Fact]
    public void Hard_negatives_never_pick_a_caption_of_the_same_image()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(3);
        var emb = torch.nn.functional.normalize(torch.randn(6, 8), dim: -1);
        var ids = torch.tensor(new long[] { 0, 0, 1, 1, 2, 3 });
        for (int trial = 0; trial < 20; trial++)
        {
            var (negText, negImage) = Pretraining.SampleHardNegatives(emb, emb, torch.tensor(0.07f), PretrainBatch.SameImage(ids));
            var idArray = ids.data<long>().ToArray();
            var t = negText.data<long>().ToArray();
            var i = negImage.data<long>().ToArray();
            for (int row = 0; row < 6; row++)
            {
                Assert.NotEqual(idArray[row], idArray[t[row]]);
                Assert.NotEqual(idArray[row], idArray[i[row]]);
            }
        }
    }

    [Fact]
    public void A_text_matched_to_another_image_is_never_its_negative()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(4);
        // Text 1 (image 1's) also describes image 0; the reverse does not hold. Texts sit on their images,
        // so text 1 is by far the most similar other text for image 0: an unmasked sampler would draw it.
        var emb = torch.nn.functional.normalize(torch.randn(4, 8), dim: -1);
        var matches = torch.eye(4, dtype: ScalarType.Bool);
        matches[0, 1] = torch.tensor(true);
        var txt = emb.clone();
        txt[1] = emb[0].mul(0.99).add(emb[1].mul(0.01));
        txt = torch.nn.functional.normalize(txt, dim: -1);
        for (int trial = 0; trial < 50; trial++)
        {
            var (negText, negImage) = Pretraining.SampleHardNegatives(emb, txt, torch.tensor(0.07f), matches);
            var t = negText.data<long>().ToArray();
            var i = negImage.data<long>().ToArray();
            Assert.NotEqual(1, t[0]);                                   // image 0 never gets text 1 as a negative
            for (int row = 0; row < 4; row++) { Assert.NotEqual(row, t[row]); Assert.NotEqual(row, i[row]); }
            Assert.NotEqual(0, i[1]);                                   // text 1 never gets image 0 as a negative
        }
    }

    [Fact]
    public void The_hard_share_mixes_uniform_negatives_into_the_similarity_draw()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(6);
        // Image 0's most similar other text is text 1, by a margin that makes a pure similarity draw pick it always.
        var img = torch.eye(8);
        var txt = torch.eye(8);
        txt[1] = torch.nn.functional.normalize(img[0].add(img[1].mul(0.2)), dim: 0);
        var matches = torch.eye(8, dtype: ScalarType.Bool);
        int Picks(double share) => Enumerable.Range(0, 400)
            .Count(_ => Pretraining.SampleHardNegatives(img, txt, torch.tensor(0.01f), matches, share).TextForImage[0].item<long>() == 1);
        Assert.Equal(400, Picks(1.0));
        int uniform = Picks(0.0);                 // 1 in 7 expected: 57
        Assert.InRange(uniform, 30, 90);
        int half = Picks(0.5);                    // 1/2 (similarity) + 1/2 x 1/7 (uniform): 4 in 7 expected, 229
        Assert.InRange(half, 180, 280);
        Assert.Throws<ArgumentOutOfRangeException>(() => Pretraining.SampleHardNegatives(img, txt, torch.tensor(0.01f), matches, 1.5));
    }

    [Fact]
    public void Text_assignment_pairs_put_the_caption_image_where_the_label_says_and_never_a_matching_other()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(8);
        var emb = torch.nn.functional.normalize(torch.randn(6, 8), dim: -1);
        var matches = torch.eye(6, dtype: ScalarType.Bool);
        matches[4, 0] = torch.tensor(true);                 // caption 0 also describes image 4
        var counts = new int[3];
        for (int trial = 0; trial < 300; trial++)
        {
            var (first, second, labels) = TextAssignment.Sample(emb, matches);
            var f = first.data<long>().ToArray();
            var s = second.data<long>().ToArray();
            var l = labels.data<long>().ToArray();
            for (int b = 0; b < 6; b++)
            {
                counts[l[b]]++;
                Assert.NotEqual(f[b], s[b]);
                Assert.Equal(l[b] == 0, f[b] == b);
                Assert.Equal(l[b] == 1, s[b] == b);
                if (b == 0) { Assert.NotEqual(4, f[b]); Assert.NotEqual(4, s[b]); }
            }
        }
        // own image in the pair 2/3 of the time, on either side: 600 each expected of 1800
        Assert.All(counts, c => Assert.InRange(c, 500, 700));
        Assert.Throws<ArgumentException>(() => TextAssignment.Sample(emb.narrow(0, 0, 2), torch.eye(2, dtype: ScalarType.Bool)));
    }

    [Fact]
    public void Text_assignment_learns_fixed_pairs_of_a_repeated_batch()
    {
        torch.manual_seed(12);
        using var pretrained = new VlmModel(Presets.Tiny);
        using var model = TaskConversion.ToTask(pretrained, VlmTask.Nlvr2);
        model.train();
        using var head = torch.nn.Linear(Presets.Tiny.Hidden, TextAssignment.Classes);
        var batch = TinyBatches.Pretrain(Presets.Tiny);
        var (first, second, labels) = TextAssignment.Sample(torch.nn.functional.normalize(torch.randn(4, 8), dim: -1), batch.Matches);
        using var optimizer = torch.optim.AdamW(model.parameters().Concat(head.parameters()), lr: 2e-3);
        float firstLoss = 0, lastLoss = 0;
        for (int step = 0; step < 60; step++)
        {
            using var scope = torch.NewDisposeScope();
            optimizer.zero_grad();
            var image = model.EncodeImage(batch.Images).Last;
            var text = model.EncodeText(batch.Ids, batch.Padding).Last;
            var loss = torch.nn.functional.cross_entropy(TextAssignment.Logits(model, head, image, text, batch.Padding, first, second), labels);
            loss.backward();
            optimizer.step();
            if (step == 0) firstLoss = loss.item<float>();
            lastLoss = loss.item<float>();
        }
        Assert.True(lastLoss < firstLoss * 0.3, $"text assignment {firstLoss} -> {lastLoss}");
    }

    [Fact]
    public void Masking_touches_only_ordinary_tokens_and_at_most_eight_per_text()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(5);
        var ids = torch.randint(5, 61, new long[] { 16, 30 });
        ids[TensorIndex.Colon, 0] = torch.tensor(TinyBatches.Tokens.Cls);
        ids[TensorIndex.Colon, 29] = torch.tensor(TinyBatches.Tokens.Sep);
        var padding = torch.ones(16, 30, dtype: ScalarType.Int64);
        var (masked, positions, targets) = Pretraining.MaskTokens(ids, padding, TinyBatches.Tokens);
        var perRow = positions.div(30, rounding_mode: RoundingMode.floor).bincount(null, 16).data<long>().ToArray();
        Assert.All(perRow, n => Assert.InRange(n, 1, Pretraining.MaxMasks));
        var columns = positions.remainder(30).data<long>().ToArray();
        Assert.DoesNotContain(0L, columns);
        Assert.DoesNotContain(29L, columns);
        Assert.Equal(ids.flatten().index_select(0, positions).data<long>().ToArray(), targets.data<long>().ToArray());
        // Unmasked positions are unchanged.
        var changed = masked.ne(ids).flatten().nonzero().view(-1).data<long>().ToArray();
        Assert.All(changed, p => Assert.Contains(p, positions.data<long>().ToArray()));
    }
}
