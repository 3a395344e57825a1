using System.Security.Cryptography;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Checkpoints;

/// <summary>
/// A model checkpoint is a folder: <c>config.json</c> (the <see cref="VlmConfig"/>, pruned shape
/// included) and <c>model.safetensors</c> (the state dict, readable by Python's safetensors). It
/// is written into a temporary sibling folder and renamed into place, so a reader never sees half
/// of one.
/// </summary>
public static class Checkpoint
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = "model.safetensors";

    /// <summary>Writes the checkpoint and returns the SHA-256 (hex) of its weights file.</summary>
    public static string Save(VlmModel model, string folder)
    {
        var full = Path.GetFullPath(folder);
        var parent = Path.GetDirectoryName(full) ?? throw new ArgumentException($"No parent folder for '{folder}'.");
        Directory.CreateDirectory(parent);
        var temp = Path.Combine(parent, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            var weights = Path.Combine(temp, WeightsFile);
            SaveStateDict(model, weights);
            File.WriteAllText(Path.Combine(temp, ConfigFile), model.Config.ToJson());
            var hash = Hash(weights);
            if (Directory.Exists(full))
            {
                var old = Path.Combine(parent, $".{Path.GetFileName(full)}.old-{Guid.NewGuid():N}");
                Directory.Move(full, old);
                Directory.Move(temp, full);
                Directory.Delete(old, recursive: true);
            }
            else
            {
                Directory.Move(temp, full);
            }
            return hash;
        }
        finally
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
    }

    /// <summary>
    /// Reads a checkpoint folder into a new model on <paramref name="device"/> (float32, whatever dtype the file holds);
    /// a folder with a manifest (<see cref="ModelPackage"/>) is checked against it first.
    /// </summary>
    /// <exception cref="InvalidDataException">Missing or damaged files, a bad config, or weights that do not fit the config.</exception>
    public static VlmModel Load(string folder, Device? device = null)
    {
        ModelPackage.Verify(folder);
        var configPath = Path.Combine(folder, ConfigFile);
        var weightsPath = Path.Combine(folder, WeightsFile);
        if (!File.Exists(configPath) || !File.Exists(weightsPath))
            throw new InvalidDataException($"'{folder}' is not a checkpoint: it needs {ConfigFile} and {WeightsFile}.");
        VlmConfig config;
        try
        {
            config = VlmConfig.FromJson(File.ReadAllText(configPath));
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{configPath}: {e.Message}", e);
        }
        var model = Runtime.Scopes.Keep(new VlmModel(config, device));
        using var scope = torch.NewDisposeScope();
        var state = Safetensors.LoadStateDict(weightsPath);
        var expected = model.state_dict();
        var problems = new List<string>();
        problems.AddRange(expected.Keys.Except(state.Keys).Select(k => $"missing {k}"));
        problems.AddRange(state.Keys.Except(expected.Keys).Select(k => $"unexpected {k}"));
        problems.AddRange(state.Where(kv => expected.TryGetValue(kv.Key, out var e) && !e.shape.SequenceEqual(kv.Value.shape))
            .Select(kv => $"{kv.Key} has shape [{string.Join(",", kv.Value.shape)}], config wants [{string.Join(",", expected[kv.Key].shape)}]"));
        if (problems.Count > 0)
        {
            model.Dispose();
            throw new InvalidDataException($"{weightsPath} does not fit {configPath}: {string.Join("; ", problems.Take(10))}{(problems.Count > 10 ? $" (+{problems.Count - 10} more)" : "")}.");
        }
        using (torch.no_grad())
            foreach (var (name, tensor) in expected)
                tensor.copy_(state[name]);
        return model;
    }

    /// <summary>
    /// Writes a module's state dict as safetensors, floating-point tensors in <paramref name="dtype"/> when given
    /// (the model's own otherwise); the copies live only for the write.
    /// </summary>
    public static void SaveStateDict(torch.nn.Module module, string file, ScalarType? dtype = null)
    {
        using var scope = torch.NewDisposeScope();
        var state = module.state_dict().ToDictionary(kv => kv.Key, kv =>
        {
            var t = kv.Value.detach().cpu();
            return (dtype is ScalarType d && t.is_floating_point() ? t.to(d) : t).contiguous();
        });
        Safetensors.SaveStateDict(file, state);
    }

    public static string Hash(string file)
    {
        using var stream = File.OpenRead(file);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
