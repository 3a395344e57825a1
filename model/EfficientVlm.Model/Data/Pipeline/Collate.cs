using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Images;
using EfficientVlm.Model.Objectives;
using EfficientVlm.Model.Text;

namespace EfficientVlm.Model.Data.Pipeline;

/// <summary>
/// Turns dataset records into managed batches: decode (hardened loader), resize, normalise,
/// tokenise. No augmentation: a horizontal flip would swap left and right, which NLVR2
/// statements, VQA "where" answers and relation captions talk about, and ShapesWorld's own
/// variation (jitter, colour, noise) already covers what a crop or colour jitter would add.
/// </summary>
public sealed class Collate(ImageLoader images, VlmTokenizer tokenizer, int imageSize, int maxTextLength)
{
    public int ImageSize => imageSize;

    public VlmTokenizer Tokenizer => tokenizer;

    public ImageBlock Images(IReadOnlyList<string> paths)
    {
        int plane = 3 * imageSize * imageSize;
        var pixels = new float[paths.Count * plane];
        for (int i = 0; i < paths.Count; i++)
        {
            float[] one;
            try
            {
                one = images.Load(File.ReadAllBytes(paths[i]), imageSize);
            }
            catch (ImageRejectedException e)
            {
                throw new DatasetFormatException($"{paths[i]}: {e.Message}", e);
            }
            Array.Copy(one, 0, pixels, i * plane, plane);
        }
        return new ImageBlock(pixels, paths.Count, imageSize);
    }

    /// <summary>
    /// (image, caption) pairs, with which texts of the batch describe which image: text j matches image i
    /// when both come from the same image or text j's tokens equal those of one of image i's captions.
    /// Generic captions ("two shapes on a gray background") are true of many images; without this they
    /// would be, being the most similar texts, the ITM hard negatives of those images (docs/training.md).
    /// </summary>
    /// <param name="negatives">
    /// Also an edited caption per pair (<see cref="CaptionNegatives"/>), drawn with <paramref name="seed"/> and
    /// the batch's image ids; a pair whose caption has nothing to edit gets the next pair's caption.
    /// </param>
    /// <param name="pixels">False: no image is read (an empty image block), for a stage that reads vision tokens from a cache.</param>
    public ImageTextBatchData ImageText(IReadOnlyList<(CaptionImage Image, string Caption)> pairs, CaptionNegatives? negatives = null, int seed = 0,
        bool pixels = true)
    {
        var ids = pairs.Select(p => tokenizer.Encode(p.Caption, maxTextLength)).ToArray();
        var keys = ids.Select(Key).ToArray();
        int b = pairs.Count;
        var matches = new bool[b * b];
        for (int i = 0; i < b; i++)
        {
            var own = pairs[i].Image.Captions.Append(pairs[i].Caption).Select(c => Key(tokenizer.Encode(c, maxTextLength))).ToHashSet();
            for (int j = 0; j < b; j++)
                matches[i * b + j] = pairs[j].Image.ImageId == pairs[i].Image.ImageId || own.Contains(keys[j]);
        }
        long[][]? edited = null;
        if (negatives is not null)
        {
            var rng = new Random(HashCode.Combine(seed, pairs.Aggregate(17L, (h, p) => h * 31 + p.Image.ImageId)));
            edited = pairs.Select((p, i) => negatives.Edit(p.Caption, rng) is { } text
                ? tokenizer.Encode(text, maxTextLength)
                : ids[(i + 1) % b]).ToArray();
        }
        return new ImageTextBatchData(Images(pixels ? pairs.Select(p => p.Image.ImagePath).ToList() : []), ids,
            pairs.Select(p => p.Image.ImageId).ToArray(), matches, tokenizer.Special.Pad, edited);

        static string Key(long[] tokens) => string.Join(',', tokens);
    }

    /// <param name="pixels">False: no image is read (an empty image block), for a stage that reads vision tokens from a cache.</param>
    public CaptionBatchData Captions(IReadOnlyList<(CaptionImage Image, string Caption)> pairs, string prompt, bool pixels = true)
    {
        var promptPieces = tokenizer.EncodeWithoutSpecials(prompt);
        var rows = pairs.Select(p =>
        {
            var caption = tokenizer.EncodeWithoutSpecials(p.Caption);
            int room = Math.Max(0, maxTextLength - 2 - promptPieces.Length);
            return (long[])[tokenizer.Special.Cls, .. promptPieces, .. caption.Take(room), tokenizer.Special.Sep];
        }).ToArray();
        return new CaptionBatchData(Images(pixels ? pairs.Select(p => p.Image.ImagePath).ToList() : []), rows, 1 + promptPieces.Length,
            tokenizer.Special.Pad, pairs.Select(p => p.Image.ImageId).ToArray());
    }

    /// <summary>Questions with their distinct answers weighted by count / number of answers (the X-VLM VQA loader's rule).</summary>
    public VqaBatchData Vqa(IReadOnlyList<VqaItem> items)
    {
        var answers = new List<long[]>();
        var owner = new List<long>();
        var weight = new List<float>();
        for (int q = 0; q < items.Count; q++)
        {
            var given = items[q].Answers;
            foreach (var group in given.GroupBy(a => a, StringComparer.Ordinal))
            {
                answers.Add(tokenizer.Encode(group.Key, maxTextLength));
                owner.Add(q);
                weight.Add((float)group.Count() / given.Count);
            }
        }
        return new VqaBatchData(Images(items.Select(i => i.ImagePath).ToList()),
            items.Select(i => tokenizer.Encode(i.Question, maxTextLength)).ToArray(),
            answers.ToArray(), owner.ToArray(), weight.ToArray(), tokenizer.Special.Pad);
    }

    public NlvrBatchData Nlvr(IReadOnlyList<NlvrItem> items) =>
        new(Images(items.Select(i => i.LeftImage).ToList()), Images(items.Select(i => i.RightImage).ToList()),
            items.Select(i => tokenizer.Encode(i.Sentence, maxTextLength)).ToArray(),
            items.Select(i => i.Label ? 1L : 0L).ToArray(), tokenizer.Special.Pad);

    /// <summary>As <see cref="Nlvr"/>, with each image as its row in a vision-token cache instead of its pixels.</summary>
    public NlvrTokenBatchData NlvrTokens(IReadOnlyList<NlvrItem> items, Func<string, int> row) =>
        new(items.Select(i => row(i.LeftImage)).ToArray(), items.Select(i => row(i.RightImage)).ToArray(),
            items.Select(i => tokenizer.Encode(i.Sentence, maxTextLength)).ToArray(),
            items.Select(i => i.Label ? 1L : 0L).ToArray(), tokenizer.Special.Pad);
}
