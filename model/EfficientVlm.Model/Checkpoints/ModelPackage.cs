using System.Text.Json;
using System.Text.Json.Nodes;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Checkpoints;

/// <summary>
/// A model that carries everything it needs to answer, as shipped under <c>models/</c>: a checkpoint folder
/// (<c>config.json</c>, <c>model.safetensors</c>, here in fp16) with the word-piece vocabulary its ids come
/// from (<c>vocab.txt</c>), for VQA the closed answer list it ranks (<c>answer_list.json</c>), and
/// <c>manifest.json</c>: each file's byte length and SHA-256, checked by <see cref="Checkpoint.Load"/>.
/// </summary>
public static class ModelPackage
{
    public const string VocabFile = "vocab.txt";
    public const string AnswersFile = "answer_list.json";
    public const string ManifestFile = "manifest.json";

    /// <summary>The vocabulary a checkpoint folder carries, or null when it has none (then the data folder's is used).</summary>
    public static string? Vocabulary(string folder) => File.Exists(Path.Combine(folder, VocabFile)) ? Path.Combine(folder, VocabFile) : null;

    /// <summary>Whether two vocabulary files number the same pieces alike (compared piece by piece, whatever the line endings).</summary>
    public static bool SameVocabulary(string a, string b)
    {
        static IEnumerable<string> Pieces(string file) => File.ReadLines(file).Select(l => l.TrimEnd('\r')).Where(l => l.Length > 0);
        return Pieces(a).SequenceEqual(Pieces(b));
    }

    /// <summary>The VQA answer list a checkpoint folder carries (in <paramref name="file"/>, by default <see cref="AnswersFile"/>), or null.</summary>
    public static IReadOnlyList<string>? Answers(string folder, string file = AnswersFile)
    {
        var path = Path.Combine(folder, file);
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<List<string>>(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path} is empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not a JSON list of answers: {e.Message}", e);
        }
    }

    /// <summary>
    /// Puts a model's words beside its weights: <paramref name="vocabulary"/> copied in and, when given, the answer list,
    /// so the next stage, a serving bundle and <c>vlm eval</c> read the ids it was trained with, on any data folder.
    /// </summary>
    public static void WriteWords(string folder, string vocabulary, IReadOnlyList<string>? answers)
    {
        var target = Path.Combine(folder, VocabFile);
        if (Path.GetFullPath(vocabulary) != Path.GetFullPath(target)) File.Copy(vocabulary, target, overwrite: true);
        if (answers is not null)
            File.WriteAllText(Path.Combine(folder, AnswersFile), JsonSerializer.Serialize(answers, new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// Writes <paramref name="model"/> as a package: weights in <paramref name="dtype"/> (fp16 by default), its config,
    /// <paramref name="vocabulary"/> copied in, the answer list when given, and the manifest. Returns the manifest's entries.
    /// </summary>
    public static IReadOnlyDictionary<string, (long Bytes, string Sha256)> Write(VlmModel model, string folder, string vocabulary,
        IReadOnlyList<string>? answers, ScalarType dtype = ScalarType.Float16)
    {
        if (model.Config.Task == VlmTask.Vqa && answers is null) throw new ArgumentException("A VQA model package needs its answer list.");
        Directory.CreateDirectory(folder);
        foreach (var stale in new[] { AnswersFile, ManifestFile }) File.Delete(Path.Combine(folder, stale));
        Checkpoint.SaveStateDict(model, Path.Combine(folder, Checkpoint.WeightsFile), dtype);
        File.WriteAllText(Path.Combine(folder, Checkpoint.ConfigFile), model.Config.ToJson());
        WriteWords(folder, vocabulary, answers);
        var files = new[] { Checkpoint.ConfigFile, Checkpoint.WeightsFile, VocabFile, AnswersFile }
            .Where(f => File.Exists(Path.Combine(folder, f)))
            .ToDictionary(f => f, f => (new FileInfo(Path.Combine(folder, f)).Length, Checkpoint.Hash(Path.Combine(folder, f))));
        var manifest = new JsonObject
        {
            ["model"] = model.Config.Name,
            ["task"] = model.Config.Task.ToString().ToLowerInvariant(),
            ["files"] = new JsonObject(files.Select(kv => KeyValuePair.Create(kv.Key,
                (JsonNode?)new JsonObject { ["bytes"] = kv.Value.Length, ["sha256"] = kv.Value.Item2 }))),
        };
        File.WriteAllText(Path.Combine(folder, ManifestFile), manifest.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return files;
    }

    /// <summary>
    /// Checks every file the folder's manifest lists against its length and SHA-256 (nothing when there is no manifest).
    /// </summary>
    /// <exception cref="InvalidDataException">A listed file is missing, truncated, grown or changed; the message names it.</exception>
    public static void Verify(string folder)
    {
        var path = Path.Combine(folder, ManifestFile);
        if (!File.Exists(path)) return;
        JsonObject files;
        try
        {
            files = JsonNode.Parse(File.ReadAllText(path))?["files"]?.AsObject() ?? throw new InvalidDataException($"{path} lists no files.");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new InvalidDataException($"{path} is not a model manifest: {e.Message}", e);
        }
        foreach (var (name, entry) in files)
        {
            var file = Path.Combine(folder, name);
            if (name.Contains('/') || name.Contains('\\') || name.StartsWith('.'))
                throw new InvalidDataException($"{path} names '{name}', which is not a file of the package.");
            if (!File.Exists(file)) throw new InvalidDataException($"{file} is missing: {path} lists it.");
            long bytes = entry?["bytes"]?.GetValue<long>() ?? -1;
            var sha = entry?["sha256"]?.GetValue<string>() ?? "";
            long actual = new FileInfo(file).Length;
            if (actual != bytes)
                throw new InvalidDataException($"{file} has {actual} bytes, the manifest says {bytes}: the file is truncated or damaged.");
            if (!string.Equals(Checkpoint.Hash(file), sha, StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"{file} does not match its SHA-256 in {path}: the file is damaged or was changed.");
        }
    }
}
