namespace EfficientVlm.Model.Metrics;

/// <summary>
/// Recall at 1, 5 and 10 in both retrieval directions, as fractions in [0, 1]. "Text retrieval" (image-to-text,
/// TR) ranks the texts for an image; "image retrieval" (text-to-image, IR) ranks the images for a text.
/// </summary>
/// <param name="TextR1">Image-to-text R@1.</param>
/// <param name="TextR5">Image-to-text R@5.</param>
/// <param name="TextR10">Image-to-text R@10.</param>
/// <param name="ImageR1">Text-to-image R@1.</param>
/// <param name="ImageR5">Text-to-image R@5.</param>
/// <param name="ImageR10">Text-to-image R@10.</param>
public sealed record RetrievalRecall(
    double TextR1,
    double TextR5,
    double TextR10,
    double ImageR1,
    double ImageR5,
    double ImageR10)
{
    /// <summary>Mean of the three image-to-text recalls.</summary>
    public double TextMean => (TextR1 + TextR5 + TextR10) / 3;

    /// <summary>Mean of the three text-to-image recalls.</summary>
    public double ImageMean => (ImageR1 + ImageR5 + ImageR10) / 3;

    /// <summary>Mean of all six recalls (the "RSUM / 6" or "r_mean" commonly reported).</summary>
    public double Mean => (TextMean + ImageMean) / 2;
}

/// <summary>Upper bounds of text-to-image R@1, R@5 and R@10 (<see cref="RetrievalMetrics.IdenticalTextCeiling"/>).</summary>
public sealed record ImageRecallCeiling(double R1, double R5, double R10);

/// <summary>
/// Image-text retrieval recall (the COCO / Flickr30K protocol used by ALBEF, X-VLM and their successors).
/// </summary>
/// <remarks>
/// Ground truth: text <c>t</c> describes image <c>textOwner[t]</c>; an image usually has about five texts.
/// Image-to-text: an image's rank is the best (smallest, 0-based) position among its ranked texts of any of its
/// ground-truth texts, and it counts for R@K when that rank is below K. Text-to-image: a text counts for R@K when its
/// image is among the first K of its ranked images. A ranked list may be truncated (a top-k list); a ground-truth
/// item that does not appear in it counts as a miss for every K.
/// </remarks>
public static class RetrievalMetrics
{
    /// <summary>The cut-offs reported: 1, 5 and 10.</summary>
    public static IReadOnlyList<int> Cutoffs { get; } = [1, 5, 10];

    /// <summary>The rank given to a ground-truth item that does not appear in a (truncated) ranked list.</summary>
    public const int NotRanked = int.MaxValue;

    /// <summary>Computes the six recalls.</summary>
    /// <param name="imageToText">For each image, text indices from best to worst match.</param>
    /// <param name="textToImage">For each text, image indices from best to worst match.</param>
    /// <param name="textOwner">For each text, the index of the image it describes.</param>
    /// <returns>The recalls, as fractions.</returns>
    public static RetrievalRecall Compute(
        IReadOnlyList<IReadOnlyList<int>> imageToText,
        IReadOnlyList<IReadOnlyList<int>> textToImage,
        IReadOnlyList<int> textOwner)
    {
        var textRanks = ImageToTextRanks(imageToText, textOwner);
        var imageRanks = TextToImageRanks(textToImage, textOwner, imageToText.Count);
        return new RetrievalRecall(
            RecallAt(textRanks, 1),
            RecallAt(textRanks, 5),
            RecallAt(textRanks, 10),
            RecallAt(imageRanks, 1),
            RecallAt(imageRanks, 5),
            RecallAt(imageRanks, 10));
    }

    /// <summary>
    /// For each image, the 0-based position of its best-ranked ground-truth text, or <see cref="NotRanked"/>.
    /// </summary>
    /// <param name="imageToText">For each image, text indices from best to worst match.</param>
    /// <param name="textOwner">For each text, the index of the image it describes.</param>
    /// <returns>One rank per image.</returns>
    public static int[] ImageToTextRanks(IReadOnlyList<IReadOnlyList<int>> imageToText, IReadOnlyList<int> textOwner)
    {
        ArgumentNullException.ThrowIfNull(imageToText);
        ValidateOwners(textOwner, imageToText.Count);
        var ranks = new int[imageToText.Count];
        for (var image = 0; image < ranks.Length; image++)
        {
            var ranking = imageToText[image] ?? throw new ArgumentException($"Image {image} has no ranking.", nameof(imageToText));
            ranks[image] = NotRanked;
            for (var position = 0; position < ranking.Count; position++)
            {
                var text = ranking[position];
                if ((uint)text >= (uint)textOwner.Count)
                {
                    throw new ArgumentOutOfRangeException(nameof(imageToText), $"Text index {text} is out of range.");
                }

                if (textOwner[text] == image)
                {
                    ranks[image] = position;
                    break;
                }
            }
        }

        return ranks;
    }

    /// <summary>For each text, the 0-based position of its image in its ranking, or <see cref="NotRanked"/>.</summary>
    /// <param name="textToImage">For each text, image indices from best to worst match.</param>
    /// <param name="textOwner">For each text, the index of the image it describes.</param>
    /// <param name="imageCount">Number of images.</param>
    /// <returns>One rank per text.</returns>
    public static int[] TextToImageRanks(IReadOnlyList<IReadOnlyList<int>> textToImage, IReadOnlyList<int> textOwner, int imageCount)
    {
        ArgumentNullException.ThrowIfNull(textToImage);
        ValidateOwners(textOwner, imageCount);
        if (textToImage.Count != textOwner.Count)
        {
            throw new ArgumentException("There must be one image ranking per text.", nameof(textToImage));
        }

        var ranks = new int[textToImage.Count];
        for (var text = 0; text < ranks.Length; text++)
        {
            var ranking = textToImage[text] ?? throw new ArgumentException($"Text {text} has no ranking.", nameof(textToImage));
            ranks[text] = NotRanked;
            for (var position = 0; position < ranking.Count; position++)
            {
                var image = ranking[position];
                if ((uint)image >= (uint)imageCount)
                {
                    throw new ArgumentOutOfRangeException(nameof(textToImage), $"Image index {image} is out of range.");
                }

                if (image == textOwner[text])
                {
                    ranks[text] = position;
                    break;
                }
            }
        }

        return ranks;
    }

    /// <summary>Fraction of queries whose 0-based rank is below <paramref name="k"/>.</summary>
    /// <param name="ranks">One rank per query.</param>
    /// <param name="k">The cut-off (at least 1).</param>
    /// <returns>The recall at <paramref name="k"/>.</returns>
    public static double RecallAt(IReadOnlyList<int> ranks, int k)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        if (ranks.Count == 0)
        {
            throw new ArgumentException("At least one query is needed.", nameof(ranks));
        }

        var hits = ranks.Count(rank => rank < k);
        return (double)hits / ranks.Count;
    }

    /// <summary>
    /// Indices of <paramref name="scores"/> from highest to lowest score; equal scores keep ascending index order.
    /// A convenience for turning a similarity row into a ranking. (ALBEF-style code uses
    /// <c>np.argsort(scores)[::-1]</c>, whose order among exactly equal scores is unspecified.)
    /// </summary>
    /// <param name="scores">One score per candidate.</param>
    /// <returns>The candidate indices, best first.</returns>
    public static int[] RankDescending(IReadOnlyList<double> scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        // OrderByDescending is a stable sort, so ties stay in index order.
        return [.. Enumerable.Range(0, scores.Count).OrderByDescending(i => scores[i])];
    }

    /// <summary>
    /// The most text-to-image recall any model can reach when texts repeat. Identical texts are the same input, so
    /// they get the same image ranking, and of a group of identical texts only those owned by the images in its
    /// first K places count for R@K: at best the K images owning most of the group. ShapesWorld's generic captions
    /// ("two shapes on a gray background") make this ceiling far below 1 (docs/data.md).
    /// </summary>
    /// <param name="texts">The texts, compared exactly (ordinal).</param>
    /// <param name="textOwner">For each text, the index of the image it describes.</param>
    /// <param name="imageCount">Number of images.</param>
    /// <returns>The ceilings of text-to-image R@1, R@5 and R@10.</returns>
    public static ImageRecallCeiling IdenticalTextCeiling(IReadOnlyList<string> texts, IReadOnlyList<int> textOwner, int imageCount)
    {
        ArgumentNullException.ThrowIfNull(texts);
        ValidateOwners(textOwner, imageCount);
        if (texts.Count != textOwner.Count)
        {
            throw new ArgumentException("There must be one owner per text.", nameof(textOwner));
        }

        if (texts.Count == 0)
        {
            throw new ArgumentException("At least one text is needed.", nameof(texts));
        }

        // Per group of identical texts, how many of them each owner has, most first.
        var groups = Enumerable.Range(0, texts.Count).GroupBy(t => texts[t], StringComparer.Ordinal)
            .Select(g => g.GroupBy(t => textOwner[t]).Select(o => o.Count()).OrderDescending().ToArray())
            .ToList();
        double Ceiling(int k) => (double)groups.Sum(owners => owners.Take(k).Sum()) / texts.Count;
        return new ImageRecallCeiling(Ceiling(1), Ceiling(5), Ceiling(10));
    }

    /// <summary>
    /// The expected recalls of a ranking chosen uniformly at random (every permutation equally likely), for
    /// chance baselines. Image-to-text, for an image with g of the M texts: P(some ground-truth text in the top K)
    /// = 1 - C(M - g, K) / C(M, K), averaged over images (0 for an image with no text). Text-to-image, with N images:
    /// min(K, N) / N for every text.
    /// </summary>
    /// <param name="textOwner">For each text, the index of the image it describes.</param>
    /// <param name="imageCount">Number of images.</param>
    /// <returns>The expected recalls.</returns>
    public static RetrievalRecall RandomBaseline(IReadOnlyList<int> textOwner, int imageCount)
    {
        ValidateOwners(textOwner, imageCount);
        if (textOwner.Count == 0)
        {
            throw new ArgumentException("At least one text is needed.", nameof(textOwner));
        }

        var perImage = new int[imageCount];
        foreach (var owner in textOwner)
        {
            perImage[owner]++;
        }

        double TextRecall(int k) => perImage.Average(g => ChanceOfAnyInTop(textOwner.Count, g, k));
        double ImageRecall(int k) => (double)Math.Min(k, imageCount) / imageCount;

        return new RetrievalRecall(TextRecall(1), TextRecall(5), TextRecall(10), ImageRecall(1), ImageRecall(5), ImageRecall(10));
    }

    // 1 - C(total - good, k) / C(total, k), computed as a running product to stay in range for large sets.
    private static double ChanceOfAnyInTop(int total, int good, int k)
    {
        if (good == 0)
        {
            return 0;
        }

        var noneInTop = 1.0;
        for (var i = 0; i < Math.Min(k, total); i++)
        {
            var remainingBad = total - good - i;
            if (remainingBad <= 0)
            {
                return 1;
            }

            noneInTop *= (double)remainingBad / (total - i);
        }

        return 1 - noneInTop;
    }

    private static void ValidateOwners(IReadOnlyList<int> textOwner, int imageCount)
    {
        ArgumentNullException.ThrowIfNull(textOwner);
        ArgumentOutOfRangeException.ThrowIfLessThan(imageCount, 1);
        foreach (var owner in textOwner)
        {
            if ((uint)owner >= (uint)imageCount)
            {
                throw new ArgumentOutOfRangeException(nameof(textOwner), $"Image index {owner} is out of range.");
            }
        }
    }
}
