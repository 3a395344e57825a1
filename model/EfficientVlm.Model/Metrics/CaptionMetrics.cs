using System.Text;

namespace EfficientVlm.Model.Metrics;

/// <summary>One image of a caption-evaluation set: the generated caption and its human reference captions.</summary>
/// <param name="Candidate">The generated caption (already tokenised: lower-case words separated by spaces).</param>
/// <param name="References">The reference captions, tokenised the same way (at least one).</param>
public sealed record CaptionSample(string Candidate, IReadOnlyList<string> References);

/// <summary>Corpus BLEU-1..4 and the per-image values, as coco-caption's <c>Bleu(4)</c> returns them.</summary>
/// <param name="Scores">Corpus BLEU-1, BLEU-2, BLEU-3, BLEU-4 (index 0 is BLEU-1).</param>
/// <param name="PerImage">Per image, in input order, its own BLEU-1..4 (sentence-level, with its own brevity penalty).</param>
/// <param name="CandidateLength">Total number of candidate words.</param>
/// <param name="ReferenceLength">Total effective reference length (the "closest" reference length of each image, summed).</param>
public sealed record BleuResult(
    IReadOnlyList<double> Scores,
    IReadOnlyList<IReadOnlyList<double>> PerImage,
    long CandidateLength,
    long ReferenceLength)
{
    /// <summary>Corpus BLEU-1.</summary>
    public double Bleu1 => Scores[0];

    /// <summary>Corpus BLEU-2.</summary>
    public double Bleu2 => Scores[1];

    /// <summary>Corpus BLEU-3.</summary>
    public double Bleu3 => Scores[2];

    /// <summary>Corpus BLEU-4.</summary>
    public double Bleu4 => Scores[3];
}

/// <summary>CIDEr-D of a corpus and of each image, as coco-caption's <c>Cider()</c> returns them.</summary>
/// <param name="Score">The corpus score: the mean of the per-image scores.</param>
/// <param name="PerImage">The score of each image, in input order.</param>
public sealed record CiderResult(double Score, IReadOnlyList<double> PerImage);

/// <summary>
/// BLEU-1..4 and CIDEr-D exactly as the MS-COCO caption evaluation code computes them
/// (tylin/coco-caption, <c>pycocoevalcap/bleu/bleu_scorer.py</c> called with <c>option='closest'</c>, and
/// <c>pycocoevalcap/cider/cider_scorer.py</c>; the same scorers are vendored by nlg-eval).
/// </summary>
/// <remarks>
/// <para><b>Input format.</b> The scorers split every string on whitespace and nothing more. COCOEvalCap runs the
/// Stanford PTB tokenizer first (lower-case, punctuation tokens removed); callers must do the equivalent themselves,
/// for instance with <see cref="Tokenize"/>, before calling <see cref="Bleu"/> or <see cref="CiderD"/>.</para>
/// <para><b>CIDEr-D document frequencies</b> are counted over the reference sets of the images passed in, so the
/// score of an image depends on the whole evaluated set. With a single image every n-gram has idf log(1) - log(1) = 0
/// and the score is 0.</para>
/// </remarks>
public static class CaptionMetrics
{
    /// <summary>Highest n-gram order used by both metrics.</summary>
    public const int MaxOrder = 4;

    /// <summary>The Gaussian length-penalty width CIDEr-D uses.</summary>
    public const double DefaultSigma = 6.0;

    // The smoothing constants of bleu_scorer.py: `tiny` is added to matches and lengths in numerators and
    // `small` to guesses and lengths in denominators, so that an order with no guesses yields 0 rather than NaN.
    private const double Tiny = 1e-15;
    private const double Small = 1e-9;

    // The token strings that coco-caption's PTB wrapper drops after tokenising (written here in lower case,
    // since Tokenize lower-cases first).
    private static readonly HashSet<string> _ptbPunctuationTokens = new(StringComparer.Ordinal)
    {
        "''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--", "...", ";",
    };

    // Contraction suffixes the PTB tokenizer splits off into their own token ("dog's" -> "dog 's").
    private static readonly string[] _cliticSuffixes = ["n't", "'s", "'re", "'ve", "'ll", "'d", "'m"];

    /// <summary>
    /// Corpus-level BLEU-1..4 as coco-caption computes it: per n-gram order, clipped matches (each candidate
    /// n-gram counts at most as often as it appears in the single reference where it is most frequent) summed over
    /// the corpus, divided by the corpus count of candidate n-grams; BLEU-n is the geometric mean of orders 1..n;
    /// the brevity penalty <c>exp(1 - r/c)</c> applies when the total candidate length c is below the total
    /// effective reference length r, where each image contributes the reference length closest to its candidate's
    /// length (ties go to the shorter reference).
    /// </summary>
    /// <param name="samples">The images to score (order matters only for <see cref="BleuResult.PerImage"/>).</param>
    /// <returns>Corpus and per-image scores.</returns>
    /// <remarks>
    /// Every ratio uses the official smoothing: matches + 1e-15 over guesses + 1e-9, and candidate length + 1e-15
    /// over reference length + 1e-9 for the brevity ratio. So an order with no match gives a tiny positive value
    /// rather than 0 (BLEU-4 of a sentence with no 4-gram match is about 1e-4, not 0), exactly as coco-caption
    /// reports it. The per-image values follow the current (Python 3) coco-caption: each image's own geometric mean
    /// and brevity penalty. Older versions returned differently shaped per-image lists; the corpus values are the
    /// same in all versions.
    /// </remarks>
    public static BleuResult Bleu(IReadOnlyList<CaptionSample> samples)
    {
        Validate(samples);

        var totalCorrect = new long[MaxOrder];
        var totalGuess = new long[MaxOrder];
        long totalCandidate = 0;
        long totalReference = 0;
        var perImage = new List<IReadOnlyList<double>>(samples.Count);

        foreach (var sample in samples)
        {
            // Reference side: every reference length, and for each n-gram the largest count in any one reference.
            var referenceLengths = new List<int>(sample.References.Count);
            var maxCounts = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var reference in sample.References)
            {
                var words = PythonText.Split(reference);
                referenceLengths.Add(words.Count);
                foreach (var (gram, count) in CountNGrams(words).SelectMany(order => order))
                {
                    if (!maxCounts.TryGetValue(gram, out var best) || count > best)
                    {
                        maxCounts[gram] = count;
                    }
                }
            }

            // Candidate side.
            var candidate = PythonText.Split(sample.Candidate);
            var candidateLength = candidate.Count;
            var counts = CountNGrams(candidate);
            var correct = new long[MaxOrder];
            var guess = new long[MaxOrder];
            for (var k = 0; k < MaxOrder; k++)
            {
                guess[k] = Math.Max(0, candidateLength - k);
                foreach (var (gram, count) in counts[k])
                {
                    correct[k] += Math.Min(maxCounts.GetValueOrDefault(gram), count);
                }
            }

            var referenceLength = ClosestLength(referenceLengths, candidateLength);
            totalCandidate += candidateLength;
            totalReference += referenceLength;
            for (var k = 0; k < MaxOrder; k++)
            {
                totalCorrect[k] += correct[k];
                totalGuess[k] += guess[k];
            }

            perImage.Add(CombineOrders(correct, guess, candidateLength, referenceLength));
        }

        var corpus = CombineOrders(totalCorrect, totalGuess, totalCandidate, totalReference);
        return new BleuResult(corpus, perImage, totalCandidate, totalReference);
    }

    /// <summary>
    /// CIDEr-D as coco-caption computes it (n = 1..4, sigma = 6): each sentence becomes, per order n, a tf-idf vector
    /// (raw n-gram count times <c>log(number of images) - log(max(1, df))</c>, df counting the images whose
    /// references contain the n-gram); the candidate is compared with each reference by a clipped cosine
    /// (<c>sum min(c, r) * r / (|c| |r|)</c>, 0 when either norm is 0) times the Gaussian length penalty
    /// <c>exp(-delta^2 / (2 sigma^2))</c>; the image score is 10 times the mean over the four orders of the mean over
    /// references. The corpus score is the mean over images.
    /// </summary>
    /// <param name="samples">The evaluated set; its references define the document frequencies.</param>
    /// <param name="sigma">Width of the length penalty (6 in CIDEr-D).</param>
    /// <returns>Corpus and per-image scores.</returns>
    /// <remarks>
    /// <para>As in the official code, the "length" in the penalty is the number of <b>bigrams</b> of a sentence (its
    /// word count minus one for a non-empty sentence; 0 for one word or none), not its word count; for two sentences
    /// that both have at least one word the difference is the same.</para>
    /// <para>When the candidate or the reference has a zero vector for an order (no n-grams of that order, or only
    /// n-grams whose idf is 0), that order contributes 0. This is the guard of the current (Python 3) coco-caption
    /// and of nlg-eval; the original 2015 scorer divided by zero there and produced NaN.</para>
    /// <para>Means are taken like numpy's <c>np.mean</c> (pairwise summation), and sums run in the official order,
    /// so results agree with the Python scorer to the last bit in the cases tested; elsewhere they may differ by an
    /// ulp or so, since numpy's <c>log</c> and the C library's are not guaranteed identical.</para>
    /// </remarks>
    public static CiderResult CiderD(IReadOnlyList<CaptionSample> samples, double sigma = DefaultSigma)
    {
        Validate(samples);

        var candidates = new List<Dictionary<string, int>[]>(samples.Count);
        var references = new List<List<Dictionary<string, int>[]>>(samples.Count);
        var documentFrequency = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var sample in samples)
        {
            candidates.Add(CountNGrams(PythonText.Split(sample.Candidate)));
            var cooked = sample.References.Select(r => CountNGrams(PythonText.Split(r))).ToList();
            references.Add(cooked);

            var seen = new HashSet<string>(cooked.SelectMany(r => r.SelectMany(order => order.Keys)), StringComparer.Ordinal);
            foreach (var gram in seen)
            {
                documentFrequency[gram] = documentFrequency.GetValueOrDefault(gram) + 1;
            }
        }

        var logImageCount = Math.Log(samples.Count);
        var penaltyDenominator = 2 * Math.Pow(sigma, 2);
        var scores = new double[samples.Count];
        var perOrder = new double[MaxOrder];
        for (var i = 0; i < samples.Count; i++)
        {
            var hypothesis = ToVector(candidates[i], documentFrequency, logImageCount);
            Array.Clear(perOrder);
            foreach (var reference in references[i])
            {
                var target = ToVector(reference, documentFrequency, logImageCount);
                double delta = hypothesis.Length - target.Length;
                var penalty = Math.Pow(Math.E, -Math.Pow(delta, 2) / penaltyDenominator);
                for (var n = 0; n < MaxOrder; n++)
                {
                    var value = 0.0;
                    foreach (var (gram, weight) in hypothesis.Weights[n])
                    {
                        var other = target.Weights[n].GetValueOrDefault(gram);
                        value += Math.Min(weight, other) * other;
                    }

                    if (hypothesis.Norms[n] != 0 && target.Norms[n] != 0)
                    {
                        value /= hypothesis.Norms[n] * target.Norms[n];
                    }

                    perOrder[n] += value * penalty;
                }
            }

            var score = NumpyMean(perOrder);
            score /= references[i].Count;
            score *= 10.0;
            scores[i] = score;
        }

        return new CiderResult(NumpyMean(scores), scores);
    }

    /// <summary>
    /// An approximation of what COCOEvalCap's PTB tokenisation does to a caption: lower-case, split punctuation
    /// off words, drop the punctuation tokens the coco-caption wrapper removes, and split English clitics
    /// ("don't" becomes "do n't", "dog's" becomes "dog 's"). Hyphens inside words, and periods or commas between
    /// digits, are kept. The result is the words joined by single spaces.
    /// </summary>
    /// <param name="caption">A raw caption.</param>
    /// <returns>The tokenised caption.</returns>
    /// <remarks>
    /// This is not the Stanford tokenizer: unusual inputs (URLs, emoticons, abbreviations with periods, brackets,
    /// which PTB rewrites as -LSB- and similar) can come out differently. For the plain English of COCO captions it
    /// gives the same tokens as the official pipeline.
    /// </remarks>
    public static string Tokenize(string caption)
    {
        ArgumentNullException.ThrowIfNull(caption);
        var tokens = new List<string>();
        foreach (var word in PythonText.Split(PythonText.Lower(caption)))
        {
            var current = new StringBuilder();
            for (var i = 0; i < word.Length; i++)
            {
                var c = word[i];
                var keepInside = (c is '.' or ',' or ':' && IsAsciiDigitAt(word, i - 1) && IsAsciiDigitAt(word, i + 1))
                    || (c is '-' or '\'' && current.Length > 0 && i + 1 < word.Length && char.IsLetterOrDigit(word[i + 1]));
                if (IsSplitPunctuation(c) && !keepInside)
                {
                    AddWord(tokens, current.ToString());
                    current.Clear();
                }
                else
                {
                    current.Append(c);
                }
            }

            AddWord(tokens, current.ToString());
        }

        return string.Join(' ', tokens.Where(t => !_ptbPunctuationTokens.Contains(t)));
    }

    private static void AddWord(List<string> tokens, string word)
    {
        if (word.Length == 0)
        {
            return;
        }

        foreach (var suffix in _cliticSuffixes)
        {
            if (word.Length > suffix.Length && word.EndsWith(suffix, StringComparison.Ordinal))
            {
                tokens.Add(word[..^suffix.Length]);
                tokens.Add(suffix);
                return;
            }
        }

        tokens.Add(word);
    }

    private static bool IsSplitPunctuation(char c) =>
        c is '.' or ',' or '?' or '!' or ':' or ';' or '"' or '`' or '\'' or '(' or ')' or '[' or ']' or '{' or '}' or '-';

    private static bool IsAsciiDigitAt(string word, int index) =>
        index >= 0 && index < word.Length && char.IsAsciiDigit(word[index]);

    private static void Validate(IReadOnlyList<CaptionSample> samples)
    {
        ArgumentNullException.ThrowIfNull(samples);
        if (samples.Count == 0)
        {
            throw new ArgumentException("At least one image is needed.", nameof(samples));
        }

        foreach (var sample in samples)
        {
            ArgumentNullException.ThrowIfNull(sample);
            ArgumentNullException.ThrowIfNull(sample.Candidate);
            ArgumentNullException.ThrowIfNull(sample.References);
            if (sample.References.Count == 0)
            {
                throw new ArgumentException("Every image needs at least one reference caption.", nameof(samples));
            }
        }
    }

    // Counts the n-grams of orders 1..4, one dictionary per order. Keys are the words joined by a space, which is
    // unambiguous because words never contain whitespace. Dictionaries keep first-occurrence order, the order in
    // which the official code visits n-grams, so floating-point sums are accumulated in the same order.
    private static Dictionary<string, int>[] CountNGrams(List<string> words)
    {
        var counts = new Dictionary<string, int>[MaxOrder];
        for (var k = 1; k <= MaxOrder; k++)
        {
            var order = new Dictionary<string, int>(StringComparer.Ordinal);
            for (var i = 0; i + k <= words.Count; i++)
            {
                var gram = k == 1 ? words[i] : string.Join(' ', words.GetRange(i, k));
                order[gram] = order.GetValueOrDefault(gram) + 1;
            }

            counts[k - 1] = order;
        }

        return counts;
    }

    // bleu_scorer's "closest" option: the reference length with the smallest distance to the candidate length,
    // the shorter one on a tie.
    private static int ClosestLength(List<int> lengths, int candidateLength)
    {
        var best = lengths[0];
        foreach (var length in lengths)
        {
            var distance = Math.Abs(length - candidateLength);
            var bestDistance = Math.Abs(best - candidateLength);
            if (distance < bestDistance || (distance == bestDistance && length < best))
            {
                best = length;
            }
        }

        return best;
    }

    // Turns match and guess counts into BLEU-1..4 with the brevity penalty, using the official smoothing.
    private static double[] CombineOrders(long[] correct, long[] guess, long candidateLength, long referenceLength)
    {
        var scores = new double[MaxOrder];
        var product = 1.0;
        for (var k = 0; k < MaxOrder; k++)
        {
            product *= (correct[k] + Tiny) / (guess[k] + Small);
            scores[k] = Math.Pow(product, 1.0 / (k + 1.0));
        }

        var ratio = (candidateLength + Tiny) / (referenceLength + Small);
        if (ratio < 1)
        {
            var penalty = Math.Exp(1 - (1 / ratio));
            for (var k = 0; k < MaxOrder; k++)
            {
                scores[k] *= penalty;
            }
        }

        return scores;
    }

    private sealed record TfIdf(Dictionary<string, double>[] Weights, double[] Norms, int Length);

    // counts2vec of cider_scorer.py: tf-idf weights per order, their Euclidean norms, and the bigram count.
    private static TfIdf ToVector(Dictionary<string, int>[] counts, Dictionary<string, int> documentFrequency, double logImageCount)
    {
        var weights = new Dictionary<string, double>[MaxOrder];
        var norms = new double[MaxOrder];
        var length = 0;
        for (var n = 0; n < MaxOrder; n++)
        {
            weights[n] = new Dictionary<string, double>(counts[n].Count, StringComparer.Ordinal);
            foreach (var (gram, termFrequency) in counts[n])
            {
                var logDf = Math.Log(Math.Max(1.0, documentFrequency.GetValueOrDefault(gram)));
                var weight = termFrequency * (logImageCount - logDf);
                weights[n][gram] = weight;
                norms[n] += Math.Pow(weight, 2);
                if (n == 1)
                {
                    length += termFrequency;
                }
            }

            norms[n] = Math.Sqrt(norms[n]);
        }

        return new TfIdf(weights, norms, length);
    }

    // numpy's float64 mean: add.reduce starting from the identity 0.0, using numpy's pairwise summation
    // (plain loop below 8 items, 8 interleaved partial sums up to 128, recursive halving above), then divide.
    private static double NumpyMean(double[] values) => (0.0 + PairwiseSum(values, 0, values.Length)) / values.Length;

    private static double PairwiseSum(double[] values, int start, int count)
    {
        if (count < 8)
        {
            var sum = 0.0;
            for (var i = 0; i < count; i++)
            {
                sum += values[start + i];
            }

            return sum;
        }

        if (count <= 128)
        {
            var partial = new double[8];
            for (var j = 0; j < 8; j++)
            {
                partial[j] = values[start + j];
            }

            var i = 8;
            for (; i < count - (count % 8); i += 8)
            {
                for (var j = 0; j < 8; j++)
                {
                    partial[j] += values[start + i + j];
                }
            }

            var result = ((partial[0] + partial[1]) + (partial[2] + partial[3]))
                + ((partial[4] + partial[5]) + (partial[6] + partial[7]));
            for (; i < count; i++)
            {
                result += values[start + i];
            }

            return result;
        }

        var half = count / 2;
        half -= half % 8;
        return PairwiseSum(values, start, half) + PairwiseSum(values, start + half, count - half);
    }
}
