using System.Text.Json;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Images;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Tasks;
using EfficientVlm.Model.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Serving;

/// <summary>What a request may hold; checked at the edge (grain, REST) before any tensor work.</summary>
public sealed record ServingLimits
{
    public int MaxTextCharacters { get; init; } = 512;
    public ImageLimits Images { get; init; } = new();

    /// <exception cref="ArgumentException">Empty, too long, or not valid text (lone surrogates, control characters).</exception>
    public string CheckText(string? text, string what)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new ArgumentException($"The {what} is empty.");
        if (text.Length > MaxTextCharacters) throw new ArgumentException($"The {what} has {text.Length} characters; at most {MaxTextCharacters} are accepted.");
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { i++; continue; }
            if (char.IsSurrogate(c)) throw new ArgumentException($"The {what} is not valid Unicode (a lone surrogate at {i}).");
            if (char.IsControl(c) && c is not ('\n' or '\r' or '\t')) throw new ArgumentException($"The {what} holds a control character at {i}.");
            if (c == '\uFFFD') throw new ArgumentException($"The {what} is not valid UTF-8 (a replacement character at {i}).");
        }
        return text.Trim();
    }
}

/// <summary>
/// A shrunk variant ready to answer: its model, tokenizer and (VQA) answer list, loaded from a serving
/// bundle (a checkpoint folder with <c>vocab.txt</c> and, for VQA, <c>answer_list.json</c>, the files of a
/// <see cref="ModelPackage"/>, written by <see cref="ModelPackage.WriteWords"/>; the shrink stage writes one, and a shipped
/// package is one). Each method takes a whole batch and runs on the executor thread; images come in
/// decoded (<see cref="ImageLoader.Load"/>, off the executor).
/// </summary>
public sealed class ServingModel : IDisposable
{
    public const string VocabFile = ModelPackage.VocabFile, AnswersFile = ModelPackage.AnswersFile;

    /// <summary>The answer list's name in bundles written before 2026-12-07; still read.</summary>
    private const string LegacyAnswersFile = "answers.json";

    private readonly Tensor? _answerIds, _answerPadding;

    private ServingModel(VlmModel model, VlmTokenizer tokenizer, IReadOnlyList<string>? answers, Device device)
    {
        Model = model;
        Tokenizer = tokenizer;
        Answers = answers;
        Bytes = ParameterCounts.Count(model) * 4;
        if (answers is not null)
        {
            var (ids, padding) = tokenizer.EncodeBatch(answers, 16);
            (_answerIds, _answerPadding) = (ids.to(device).DetachFromDisposeScope(), padding.to(device).DetachFromDisposeScope());
        }
    }

    public VlmModel Model { get; }
    public VlmTokenizer Tokenizer { get; }
    public IReadOnlyList<string>? Answers { get; }
    public VlmConfig Config => Model.Config;

    /// <summary>Bytes the weights take (float32), for the model cache's budget (counted once, on the executor, at load).</summary>
    public long Bytes { get; }

    /// <summary>Loads a serving bundle onto <paramref name="device"/> (executor thread).</summary>
    public static ServingModel Load(string folder, Device device)
    {
        var vocab = Path.Combine(folder, VocabFile);
        if (!File.Exists(vocab)) throw new FileNotFoundException($"{folder} is not a serving bundle: {VocabFile} is missing.", vocab);
        var model = Checkpoint.Load(folder, device);
        try
        {
            model.eval();
            var tokenizer = VlmTokenizer.FromVocabFile(vocab);
            IReadOnlyList<string>? answers = null;
            if (model.Config.Task == VlmTask.Vqa)
            {
                answers = ModelPackage.Answers(folder) ?? ModelPackage.Answers(folder, LegacyAnswersFile)
                    ?? throw new FileNotFoundException($"{folder} is a VQA model without {AnswersFile}.", Path.Combine(folder, AnswersFile));
            }
            return new ServingModel(model, tokenizer, answers, device);
        }
        catch
        {
            model.Dispose(); // kept outside the executor's scope: free it when the bundle is incomplete
            throw;
        }
    }

    private Tensor Images(IReadOnlyList<float[]> images, Device device)
    {
        int s = Config.ImageSize;
        var flat = new float[images.Count * 3 * s * s];
        for (int i = 0; i < images.Count; i++)
        {
            if (images[i].Length != 3 * s * s) throw new ArgumentException($"Image {i} was decoded for another size (expected 3x{s}x{s}).");
            images[i].CopyTo(flat, i * 3 * s * s);
        }
        return torch.tensor(flat, new long[] { images.Count, 3, s, s }, device: device);
    }

    private (Tensor Ids, Tensor Padding) Texts(IReadOnlyList<string> texts, Device device)
    {
        var (ids, padding) = Tokenizer.EncodeBatch(texts, Config.MaxTextLength);
        return (ids.to(device), padding.to(device));
    }

    private void Require(VlmTask task)
    {
        if (Config.Task != task) throw new ArgumentException($"This variant answers {Config.Task}, not {task}.");
    }

    /// <summary>The best answer from the closed answer list for each (image, question).</summary>
    public string[] Vqa(IReadOnlyList<float[]> images, IReadOnlyList<string> questions, Device device, int k = 16)
    {
        Require(VlmTask.Vqa);
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var (ids, padding) = Texts(questions, device);
        var states = Tasks.Vqa.EncodeQuestion(Model, Images(images, device), ids, padding);
        var (best, _) = Tasks.Vqa.Rank(Model, states, padding, _answerIds!, _answerPadding!, Math.Min(k, Answers!.Count));
        return best.cpu().data<long>().ToArray().Select(i => Answers[(int)i]).ToArray();
    }

    /// <summary>Whether each statement is true of its pair of images.</summary>
    public bool[] Nlvr(IReadOnlyList<float[]> left, IReadOnlyList<float[]> right, IReadOnlyList<string> statements, Device device)
    {
        Require(VlmTask.Nlvr2);
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var (ids, padding) = Texts(statements, device);
        var logits = Tasks.Nlvr.Logits(Model, Images(left, device), Images(right, device), ids, padding);
        return logits.argmax(1).cpu().data<long>().ToArray().Select(v => v == 1).ToArray();
    }

    /// <summary>A caption for each image (beam search, all images' beams decoded together; the image encoder runs once for the batch).</summary>
    public string[] Caption(IReadOnlyList<float[]> images, Device device, BeamSettings? beam = null)
    {
        Require(VlmTask.Captioning);
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        long[] prompt = [Tokenizer.Special.Cls, .. Tokenizer.EncodeWithoutSpecials(Training.TaskData.CaptionPrompt)];
        var tokens = Model.EncodeImage(Images(images, device)).Last;
        return Captioning.GenerateBatch(Model, tokens, prompt, Tokenizer.Special.Sep, beam ?? new BeamSettings())
            .Select(Tokenizer.Decode).ToArray();
    }

    /// <summary>
    /// Encodes a retrieval gallery once (images and, when given, texts) into ITC embeddings kept on the
    /// device; queries then cost one encoder pass each. Runs in batches of 64.
    /// </summary>
    public EmbeddedGallery EmbedGallery(IReadOnlyList<string> imageNames, IReadOnlyList<float[]> images, IReadOnlyList<string> texts, Device device)
    {
        Require(VlmTask.Retrieval);
        using var _ = torch.no_grad();
        var imageParts = new List<Tensor>();
        var textParts = new List<Tensor>();
        using (var scope = torch.NewDisposeScope())
        {
            for (int start = 0; start < images.Count; start += 64)
            {
                var chunk = images.Skip(start).Take(64).ToList();
                imageParts.Add(Model.ImageEmbedding(Model.EncodeImage(Images(chunk, device)).Last).MoveToOuterDisposeScope());
            }
            for (int start = 0; start < texts.Count; start += 64)
            {
                var (ids, padding) = Texts(texts.Skip(start).Take(64).ToList(), device);
                textParts.Add(Model.TextEmbedding(Model.EncodeText(ids, padding).Last).MoveToOuterDisposeScope());
            }
        }
        var imageEmbeddings = torch.cat(imageParts, 0).DetachFromDisposeScope();
        var textEmbeddings = textParts.Count > 0 ? torch.cat(textParts, 0).DetachFromDisposeScope() : null;
        foreach (var t in imageParts.Concat(textParts)) t.Dispose();
        return new EmbeddedGallery(imageNames.ToArray(), imageEmbeddings, texts.ToArray(), textEmbeddings);
    }

    /// <summary>For each text query, the <paramref name="k"/> gallery images of highest ITC similarity, best first.</summary>
    public (string Item, double Score)[][] RankImages(EmbeddedGallery gallery, IReadOnlyList<string> queries, int k, Device device)
    {
        Require(VlmTask.Retrieval);
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var (ids, padding) = Texts(queries, device);
        var query = Model.TextEmbedding(Model.EncodeText(ids, padding).Last);
        return TopK(query.matmul(gallery.Images.t()), gallery.ImageNames, k);
    }

    /// <summary>For each image query, the <paramref name="k"/> gallery texts of highest ITC similarity, best first.</summary>
    public (string Item, double Score)[][] RankTexts(EmbeddedGallery gallery, IReadOnlyList<float[]> images, int k, Device device)
    {
        Require(VlmTask.Retrieval);
        if (gallery.TextEmbeddings is null) throw new ArgumentException("The gallery has no texts to rank.");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var query = Model.ImageEmbedding(Model.EncodeImage(Images(images, device)).Last);
        return TopK(query.matmul(gallery.TextEmbeddings.t()), gallery.Texts, k);
    }

    private static (string Item, double Score)[][] TopK(Tensor similarity, IReadOnlyList<string> items, int k)
    {
        k = Math.Clamp(k, 1, items.Count);
        var (values, indices) = similarity.topk(k, dim: 1);
        var v = values.cpu().data<float>().ToArray();
        var i = indices.cpu().data<long>().ToArray();
        return Enumerable.Range(0, (int)similarity.shape[0])
            .Select(q => Enumerable.Range(0, k).Select(j => (items[(int)i[q * k + j]], (double)v[q * k + j])).ToArray()).ToArray();
    }

    public void Dispose()
    {
        Model.Dispose();
        _answerIds?.Dispose();
        _answerPadding?.Dispose();
    }
}

/// <summary>A retrieval gallery's ITC embeddings (L2-normalised, on the serving device) and the names they stand for.</summary>
public sealed class EmbeddedGallery(string[] imageNames, Tensor images, string[] texts, Tensor? textEmbeddings) : IDisposable
{
    public string[] ImageNames { get; } = imageNames;
    public Tensor Images { get; } = images;
    public string[] Texts { get; } = texts;
    public Tensor? TextEmbeddings { get; } = textEmbeddings;

    public void Dispose()
    {
        Images.Dispose();
        TextEmbeddings?.Dispose();
    }
}
