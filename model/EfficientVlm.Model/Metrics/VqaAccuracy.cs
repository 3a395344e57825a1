using System.Globalization;
using System.Text;

namespace EfficientVlm.Model.Metrics;

/// <summary>
/// The VQA accuracy of the official VQA evaluation (GT-Vision-Lab/VQA,
/// <c>PythonEvaluationTools/vqaEvaluation/vqaEval.py</c>, the Python 3 version whose punctuation list
/// contains <c>{ } - !</c> and whose contraction table uses plain apostrophes; the same file is vendored
/// unchanged by LAVIS as <c>lavis/common/vqa_tools/vqa_eval.py</c>).
/// </summary>
/// <remarks>
/// <para>What the official code does to each string, and therefore what this class does:</para>
/// <list type="number">
/// <item>The <b>predicted</b> answer: every <c>'\n'</c> and <c>'\t'</c> becomes a space, the result is stripped
/// of surrounding whitespace, then <see cref="ProcessPunctuation"/> and then <see cref="ProcessDigitArticle"/> run.
/// That whole chain is <see cref="Normalize"/>.</item>
/// <item>The <b>ground-truth</b> answers are compared as they are stored, with one exception: when the answers
/// of a question are not all identical (more than one distinct raw string), each of them goes through
/// <see cref="ProcessPunctuation"/> only. The official code never applies <see cref="ProcessDigitArticle"/>
/// (lower-casing, number words, articles, contractions) to ground truth, nor the newline/tab/strip step.
/// So when all ten annotators typed the same thing, that raw string is the only thing that can match.
/// (The VQA annotation files already store answers in this normalised form, which is why this matters little in
/// practice; the behaviour is reproduced rather than "fixed" so that numbers agree with the official scorer.)</item>
/// <item>Matching is plain ordinal string equality between the normalised prediction and the (possibly
/// punctuation-processed) ground truth.</item>
/// <item>Per question: for each of the N ground-truth answers, leave that one out and count how many of the
/// other N-1 equal the prediction; the subset's value is <c>min(1, count / 3)</c>. The question's accuracy is the
/// mean over the N subsets (N is 10 in VQA v2). The overall accuracy is the mean over questions. The official
/// scorer prints <c>round(100 * mean, 2)</c>; this class returns the unrounded fraction in [0, 1].</item>
/// </list>
/// <para>Python string semantics are mirrored where they matter: <c>str.strip()</c>/<c>str.split()</c> use Python's
/// notion of whitespace (which adds U+001C..U+001F to .NET's), regex <c>\d</c> means any Unicode decimal digit, and
/// <c>str.lower()</c> is reproduced including its two context/length-changing rules (U+0130 and final sigma).</para>
/// </remarks>
public static class VqaAccuracy
{
    /// <summary>How many leave-one-out matches give full credit.</summary>
    public const double MatchesForFullCredit = 3.0;

    // The official code passes re.UNICODE (== 32) in the position of re.sub's `count` argument, so at most
    // 32 periods are ever removed from one answer. Reproduced on purpose.
    private const int MaxPeriodRemovals = 32;

    // The punctuation characters of the official list, in its order.
    private static readonly char[] _punctuation =
    [
        ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!',
    ];

    private static readonly Dictionary<string, string> _numberWords = new(StringComparer.Ordinal)
    {
        ["none"] = "0",
        ["zero"] = "0",
        ["one"] = "1",
        ["two"] = "2",
        ["three"] = "3",
        ["four"] = "4",
        ["five"] = "5",
        ["six"] = "6",
        ["seven"] = "7",
        ["eight"] = "8",
        ["nine"] = "9",
        ["ten"] = "10",
    };

    private static readonly HashSet<string> _articles = new(StringComparer.Ordinal) { "a", "an", "the" };

    // The official contraction table, entry for entry (including its oddities, such as "somebody'd" mapping to
    // "somebodyd"). The keys that start with a capital letter ("Id've", "I'dve", "Im", "Ive") can never match,
    // because words are lower-cased before the lookup; they are kept so that the table is the official one.
    private static readonly Dictionary<string, string> _contractions = BuildContractions(
    [
        "aint", "ain't", "arent", "aren't", "cant", "can't", "couldve", "could've", "couldnt", "couldn't",
        "couldn'tve", "couldn't've", "couldnt've", "couldn't've", "didnt", "didn't", "doesnt", "doesn't",
        "dont", "don't", "hadnt", "hadn't", "hadnt've", "hadn't've", "hadn'tve", "hadn't've", "hasnt", "hasn't",
        "havent", "haven't", "hed", "he'd", "hed've", "he'd've", "he'dve", "he'd've", "hes", "he's",
        "howd", "how'd", "howll", "how'll", "hows", "how's", "Id've", "I'd've", "I'dve", "I'd've",
        "Im", "I'm", "Ive", "I've", "isnt", "isn't", "itd", "it'd", "itd've", "it'd've", "it'dve", "it'd've",
        "itll", "it'll", "let's", "let's", "maam", "ma'am", "mightnt", "mightn't", "mightnt've", "mightn't've",
        "mightn'tve", "mightn't've", "mightve", "might've", "mustnt", "mustn't", "mustve", "must've",
        "neednt", "needn't", "notve", "not've", "oclock", "o'clock", "oughtnt", "oughtn't",
        "ow's'at", "'ow's'at", "'ows'at", "'ow's'at", "'ow'sat", "'ow's'at", "shant", "shan't",
        "shed've", "she'd've", "she'dve", "she'd've", "she's", "she's", "shouldve", "should've",
        "shouldnt", "shouldn't", "shouldnt've", "shouldn't've", "shouldn'tve", "shouldn't've",
        "somebody'd", "somebodyd", "somebodyd've", "somebody'd've", "somebody'dve", "somebody'd've",
        "somebodyll", "somebody'll", "somebodys", "somebody's", "someoned", "someone'd",
        "someoned've", "someone'd've", "someone'dve", "someone'd've", "someonell", "someone'll",
        "someones", "someone's", "somethingd", "something'd", "somethingd've", "something'd've",
        "something'dve", "something'd've", "somethingll", "something'll", "thats", "that's",
        "thered", "there'd", "thered've", "there'd've", "there'dve", "there'd've", "therere", "there're",
        "theres", "there's", "theyd", "they'd", "theyd've", "they'd've", "they'dve", "they'd've",
        "theyll", "they'll", "theyre", "they're", "theyve", "they've", "twas", "'twas", "wasnt", "wasn't",
        "wed've", "we'd've", "we'dve", "we'd've", "weve", "we've", "werent", "weren't", "whatll", "what'll",
        "whatre", "what're", "whats", "what's", "whatve", "what've", "whens", "when's", "whered", "where'd",
        "wheres", "where's", "whereve", "where've", "whod", "who'd", "whod've", "who'd've", "who'dve", "who'd've",
        "wholl", "who'll", "whos", "who's", "whove", "who've", "whyll", "why'll", "whyre", "why're",
        "whys", "why's", "wont", "won't", "wouldve", "would've", "wouldnt", "wouldn't", "wouldnt've", "wouldn't've",
        "wouldn'tve", "wouldn't've", "yall", "y'all", "yall'll", "y'all'll", "y'allll", "y'all'll",
        "yall'd've", "y'all'd've", "y'alld've", "y'all'd've", "y'all'dve", "y'all'd've", "youd", "you'd",
        "youd've", "you'd've", "you'dve", "you'd've", "youll", "you'll", "youre", "you're", "youve", "you've",
    ]);

    /// <summary>Number of entries in the official contraction table (exposed for tests).</summary>
    public static int ContractionCount => _contractions.Count;

    /// <summary>
    /// Normalises an answer the way the official scorer normalises a <b>predicted</b> answer: newline and tab to
    /// space, strip, <see cref="ProcessPunctuation"/>, then <see cref="ProcessDigitArticle"/>.
    /// </summary>
    /// <param name="answer">The raw answer text.</param>
    /// <returns>The normalised answer.</returns>
    public static string Normalize(string answer)
    {
        ArgumentNullException.ThrowIfNull(answer);
        var text = PythonText.Strip(answer.Replace('\n', ' ').Replace('\t', ' '));
        return ProcessDigitArticle(ProcessPunctuation(text));
    }

    /// <summary>
    /// The official <c>processPunctuation</c>. For each punctuation character of the official list: if the
    /// <em>original</em> text contains that character followed by a space, or preceded by a space, or if the
    /// original text contains a digit-comma-digit sequence anywhere, every occurrence of the character is deleted;
    /// otherwise every occurrence becomes a space. Afterwards each period that is not followed by a digit is
    /// deleted (at most 32 of them, see the class remarks). Apostrophes and colons are not in the list and survive.
    /// </summary>
    /// <param name="text">The text to process.</param>
    /// <returns>The processed text (it may contain extra or trailing spaces, as in the official code).</returns>
    public static string ProcessPunctuation(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var hasDigitCommaDigit = ContainsDigitCommaDigit(text);
        var output = text;
        foreach (var mark in _punctuation)
        {
            // The tests look at the untouched input, exactly like the official loop does.
            var delete = hasDigitCommaDigit
                || text.Contains(string.Concat(mark.ToString(), " "), StringComparison.Ordinal)
                || text.Contains(string.Concat(" ", mark.ToString()), StringComparison.Ordinal);
            output = delete
                ? output.Replace(mark.ToString(), string.Empty, StringComparison.Ordinal)
                : output.Replace(mark, ' ');
        }

        return RemovePeriods(output);
    }

    /// <summary>
    /// The official <c>processDigitArticle</c>: lower-case, split on whitespace, map the number words
    /// "none", "zero" ... "ten" to digits, drop the articles "a", "an", "the", expand contractions written without
    /// an apostrophe (e.g. "dont" to "don't") and join the words with single spaces.
    /// </summary>
    /// <param name="text">The text to process.</param>
    /// <returns>The processed text.</returns>
    public static string ProcessDigitArticle(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var kept = new List<string>();
        foreach (var raw in PythonText.Split(PythonText.Lower(text)))
        {
            var word = _numberWords.TryGetValue(raw, out var digit) ? digit : raw;
            if (!_articles.Contains(word))
            {
                kept.Add(_contractions.TryGetValue(word, out var expanded) ? expanded : word);
            }
        }

        return string.Join(' ', kept);
    }

    /// <summary>
    /// Accuracy of one predicted answer against the human answers of one question (normally 10), in [0, 1]:
    /// the mean over leave-one-out subsets of <c>min(1, matches among the others / 3)</c>.
    /// </summary>
    /// <param name="predicted">The raw predicted answer (it is normalised here).</param>
    /// <param name="groundTruthAnswers">The raw human answers, in any order, duplicates included.</param>
    /// <returns>The question's accuracy.</returns>
    public static double Score(string predicted, IReadOnlyList<string> groundTruthAnswers)
    {
        ArgumentNullException.ThrowIfNull(predicted);
        ArgumentNullException.ThrowIfNull(groundTruthAnswers);
        if (groundTruthAnswers.Count == 0)
        {
            throw new ArgumentException("A question needs at least one ground-truth answer.", nameof(groundTruthAnswers));
        }

        var prediction = Normalize(predicted);
        var disagree = new HashSet<string>(groundTruthAnswers, StringComparer.Ordinal).Count > 1;

        var matches = new bool[groundTruthAnswers.Count];
        var totalMatches = 0;
        for (var i = 0; i < matches.Length; i++)
        {
            var truth = disagree ? ProcessPunctuation(groundTruthAnswers[i]) : groundTruthAnswers[i];
            matches[i] = string.Equals(truth, prediction, StringComparison.Ordinal);
            if (matches[i])
            {
                totalMatches++;
            }
        }

        // Sum in the same order as the official code so that the floating-point result is identical.
        var sum = 0.0;
        foreach (var isMatch in matches)
        {
            var others = totalMatches - (isMatch ? 1 : 0);
            sum += Math.Min(1.0, others / MatchesForFullCredit);
        }

        return sum / matches.Length;
    }

    /// <summary>Mean VQA accuracy over questions, as a fraction in [0, 1] (the official scorer reports 100 times this).</summary>
    /// <param name="questions">Pairs of raw predicted answer and raw human answers.</param>
    /// <returns>The overall accuracy.</returns>
    public static double Mean(IEnumerable<(string Predicted, IReadOnlyList<string> Answers)> questions)
    {
        ArgumentNullException.ThrowIfNull(questions);
        var sum = 0.0;
        var count = 0;
        foreach (var (predicted, answers) in questions)
        {
            sum += Score(predicted, answers);
            count++;
        }

        if (count == 0)
        {
            throw new ArgumentException("At least one question is needed.", nameof(questions));
        }

        return sum / count;
    }

    private static Dictionary<string, string> BuildContractions(string[] pairs)
    {
        var table = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i < pairs.Length; i += 2)
        {
            table.Add(pairs[i], pairs[i + 1]);
        }

        return table;
    }

    // Python: re.search(r"(\d)(\,)(\d)", text) is not None, with \d meaning any Unicode decimal digit.
    private static bool ContainsDigitCommaDigit(string text)
    {
        for (var i = 1; i < text.Length - 1; i++)
        {
            if (text[i] == ',' && PythonText.IsDigitBefore(text, i) && PythonText.IsDigitAt(text, i + 1))
            {
                return true;
            }
        }

        return false;
    }

    // Python: re.compile(r"(?!<=\d)(\.)(?!\d)").sub("", text, 32). The first group is a (mis-written) lookahead
    // that can never fail in front of a period, so the pattern is "a period not followed by a digit"; the
    // lookahead looks at the original text, and only the first 32 such periods are removed.
    private static string RemovePeriods(string text)
    {
        if (!text.Contains('.', StringComparison.Ordinal))
        {
            return text;
        }

        var builder = new StringBuilder(text.Length);
        var removed = 0;
        for (var i = 0; i < text.Length; i++)
        {
            if (text[i] == '.' && removed < MaxPeriodRemovals && !PythonText.IsDigitAt(text, i + 1))
            {
                removed++;
                continue;
            }

            builder.Append(text[i]);
        }

        return builder.ToString();
    }
}

/// <summary>
/// Small re-implementations of the Python 3 string operations the official scorers rely on
/// (<c>str.split()</c>, <c>str.strip()</c>, <c>str.lower()</c>, regex <c>\d</c>).
/// </summary>
internal static class PythonText
{
    /// <summary>Python's <c>str.isspace()</c> for one UTF-16 unit: .NET whitespace plus U+001C..U+001F.</summary>
    public static bool IsSpace(char c) => char.IsWhiteSpace(c) || (c >= '\u001c' && c <= '\u001f');

    /// <summary>Python's <c>str.strip()</c> with no argument.</summary>
    public static string Strip(string text)
    {
        var start = 0;
        var end = text.Length;
        while (start < end && IsSpace(text[start]))
        {
            start++;
        }

        while (end > start && IsSpace(text[end - 1]))
        {
            end--;
        }

        return start == 0 && end == text.Length ? text : text[start..end];
    }

    /// <summary>Python's <c>str.split()</c> with no argument: runs of whitespace separate words; no empty words.</summary>
    public static List<string> Split(string text)
    {
        var words = new List<string>();
        var start = -1;
        for (var i = 0; i < text.Length; i++)
        {
            if (IsSpace(text[i]))
            {
                if (start >= 0)
                {
                    words.Add(text[start..i]);
                    start = -1;
                }
            }
            else if (start < 0)
            {
                start = i;
            }
        }

        if (start >= 0)
        {
            words.Add(text[start..]);
        }

        return words;
    }

    /// <summary>Whether the code point starting at <paramref name="index"/> is a Unicode decimal digit (regex <c>\d</c>).</summary>
    public static bool IsDigitAt(string text, int index) =>
        index < text.Length
        && Rune.DecodeFromUtf16(text.AsSpan(index), out var rune, out _) == System.Buffers.OperationStatus.Done
        && Rune.IsDigit(rune);

    /// <summary>Whether the code point that ends just before <paramref name="index"/> is a Unicode decimal digit.</summary>
    public static bool IsDigitBefore(string text, int index) =>
        index > 0
        && Rune.DecodeLastFromUtf16(text.AsSpan(0, index), out var rune, out _) == System.Buffers.OperationStatus.Done
        && Rune.IsDigit(rune);

    /// <summary>
    /// Python's <c>str.lower()</c>: simple lower-case mapping of each code point, except that U+0130 becomes
    /// "i" + U+0307 and a capital sigma becomes a final sigma at the end of a word (Unicode's Final_Sigma context).
    /// </summary>
    public static string Lower(string text)
    {
        var ascii = true;
        foreach (var c in text)
        {
            if (c > '\u007f')
            {
                ascii = false;
                break;
            }
        }

        if (ascii)
        {
            return text.ToLowerInvariant();
        }

        var runes = new List<Rune>(text.Length);
        foreach (var rune in text.EnumerateRunes())
        {
            runes.Add(rune);
        }

        var builder = new StringBuilder(text.Length + 4);
        for (var i = 0; i < runes.Count; i++)
        {
            var rune = runes[i];
            if (rune.Value == 0x0130)
            {
                builder.Append('i').Append('\u0307');
            }
            else if (rune.Value == 0x03A3)
            {
                builder.Append(IsFinalSigma(runes, i) ? '\u03c2' : '\u03c3');
            }
            else
            {
                builder.Append(Rune.ToLowerInvariant(rune).ToString());
            }
        }

        return builder.ToString();
    }

    // Final_Sigma: a cased letter, then any case-ignorable characters, then the sigma, and NOT followed by
    // case-ignorable characters and a cased letter.
    private static bool IsFinalSigma(List<Rune> runes, int index)
    {
        var before = index - 1;
        while (before >= 0 && IsCaseIgnorable(runes[before]))
        {
            before--;
        }

        if (before < 0 || !IsCased(runes[before]))
        {
            return false;
        }

        var after = index + 1;
        while (after < runes.Count && IsCaseIgnorable(runes[after]))
        {
            after++;
        }

        return after == runes.Count || !IsCased(runes[after]);
    }

    // Unicode "Cased", approximated by the letter categories that carry case.
    private static bool IsCased(Rune rune) => Rune.GetUnicodeCategory(rune) is
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter;

    // Unicode "Case_Ignorable": marks, format characters, modifier letters/symbols and the word-internal
    // punctuation of the Word_Break property (apostrophes, period, colon, middle dots).
    private static bool IsCaseIgnorable(Rune rune)
    {
        switch (Rune.GetUnicodeCategory(rune))
        {
            case UnicodeCategory.NonSpacingMark:
            case UnicodeCategory.EnclosingMark:
            case UnicodeCategory.Format:
            case UnicodeCategory.ModifierLetter:
            case UnicodeCategory.ModifierSymbol:
                return true;
            default:
                return rune.Value is 0x0027 or 0x002E or 0x003A or 0x00B7 or 0x0387 or 0x055F or 0x05F4
                    or 0x2018 or 0x2019 or 0x2024 or 0x2027 or 0xFE13 or 0xFE52 or 0xFE55 or 0xFF07 or 0xFF0E
                    or 0xFF1A;
        }
    }
}
