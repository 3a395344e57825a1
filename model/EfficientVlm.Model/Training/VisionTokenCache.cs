using EfficientVlm.Model.Data.Pipeline;
using EfficientVlm.Model.Modules;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Training;

/// <summary>
/// The output tokens of a frozen vision encoder for a fixed set of images, encoded once and then read instead of
/// decoding and encoding every image at every step. With <c>--freeze vision</c> a text-assignment or NLVR2 step spends
/// much of its time on the vision pass, which gives the same tokens every epoch (docs/training.md, "Vision tokens
/// from a cache"). The tokens are those of the encoder in eval mode (no dropout): the same as in training mode
/// for a config without dropout (the CPU presets), and the only ones a cache can hold otherwise.
/// Held on the CPU in float32: images x tokens per image x hidden x 4 bytes (40,000 NLVR2 train images of the
/// CPU teacher: 1.3 GB). Given a folder, the cache is also written there once built, named by a hash of the frozen
/// encoder's weights and of the image list, so a later stage with the same encoder and images reads it back instead of
/// encoding again (the frozen-vision stages of the teacher recipe, scripts/train-teacher.sh).
/// </summary>
public sealed class VisionTokenCache : IDisposable
{
    /// <summary>The most memory a cache may take; a larger one is refused before anything is encoded.</summary>
    public const long MaxBytes = 8L << 30;

    private const int EncodeBatch = 64;
    private readonly Dictionary<string, int> _index = new(StringComparer.Ordinal);
    private readonly List<string> _paths = [];
    private readonly string? _folder;
    private Tensor? _tokens;

    /// <summary>The distinct images of <paramref name="paths"/>, in first-seen order; kept on disk in <paramref name="folder"/> when given.</summary>
    public VisionTokenCache(IEnumerable<string> paths, string? folder = null)
    {
        _folder = folder;
        foreach (var path in paths)
            if (_index.TryAdd(path, _paths.Count)) _paths.Add(path);
    }

    public int Count => _paths.Count;

    public bool IsBuilt => _tokens is not null;

    /// <summary>Whether the tokens were read from the folder rather than encoded.</summary>
    public bool WasRead { get; private set; }

    /// <summary>Where an image's tokens sit in the cache.</summary>
    public int IndexOf(string path) =>
        _index.TryGetValue(path, out int i) ? i : throw new KeyNotFoundException($"{path} is not one of the cached images.");

    /// <summary>The bytes the cache takes for <paramref name="model"/>'s vision tokens.</summary>
    public long Bytes(VlmModel model) => (long)Count * model.Config.ImageTokens * model.Config.Hidden * sizeof(float);

    /// <summary>Refuses a model whose vision encoder still trains (its tokens change every step) or a cache over <see cref="MaxBytes"/>.</summary>
    public void Check(VlmModel model)
    {
        if (model.named_parameters().Any(p => p.name.StartsWith("vision.", StringComparison.Ordinal) && p.parameter.requires_grad))
            throw new ArgumentException("Vision tokens can be cached only when the vision encoder is frozen (--freeze vision).");
        if (Bytes(model) > MaxBytes)
            throw new ArgumentException($"The vision-token cache of {Count:N0} images would take {Bytes(model) / (1 << 20):N0} MiB " +
                $"(at most {MaxBytes / (1 << 20):N0} MiB); train without it.");
    }

    /// <summary>
    /// The tokens [B, N, D] of the images at <paramref name="indexes"/>, on <paramref name="device"/>; the first call
    /// encodes every image (on the calling thread, which must be the device executor's).
    /// </summary>
    public Tensor Gather(VlmModel model, Collate collate, int[] indexes, Device device)
    {
        if (Count == 0) throw new InvalidOperationException("The cache holds no images.");
        if (_tokens is null)
        {
            Check(model);
            string? file = _folder is null ? null : Path.Combine(_folder, $"vision-tokens-{Key(model)}.bin");
            if (file is not null && Read(file) is { } read)
            {
                _tokens = read;
                WasRead = true;
            }
            else
            {
                Build(model, collate, device);
                if (file is not null) Write(file);
            }
        }
        using var at = torch.tensor(indexes, dtype: ScalarType.Int64);
        return _tokens!.index_select(0, at).to(device);
    }

    private void Build(VlmModel model, Collate collate, Device device)
    {
        Tensor? tokens = null;
        bool training = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            for (int start = 0; start < Count; start += EncodeBatch)
            {
                using var scope = torch.NewDisposeScope();
                int n = Math.Min(EncodeBatch, Count - start);
                var encoded = model.EncodeImage(collate.Images(_paths.GetRange(start, n)).ToTensor(device)).Last;   // [n, N, D]
                if (tokens is null)
                {
                    tokens = torch.empty(Count, encoded.shape[1], encoded.shape[2], dtype: ScalarType.Float32);
                    tokens.DetachFromDisposeScope();
                }
                tokens.narrow(0, start, n).copy_(encoded);
            }
        }
        catch
        {
            tokens?.Dispose();
            throw;
        }
        finally
        {
            model.train(training);
        }
        _tokens = tokens;
    }

    /// <summary>SHA-256 (first 16 hex digits) of the vision weights, in name order, and of each image's path and length.</summary>
    private string Key(VlmModel model)
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var (name, parameter) in model.named_parameters().Where(p => p.name.StartsWith("vision.", StringComparison.Ordinal)).OrderBy(p => p.name, StringComparer.Ordinal))
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(name));
            using var values = parameter.detach().to(ScalarType.Float32).cpu().contiguous();
            sha.AppendData(MemoryMarshal.AsBytes(values.data<float>().ToArray().AsSpan()));
        }
        foreach (var path in _paths)
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes($"{path}\n{new FileInfo(path).Length}\n"));
        return Convert.ToHexStringLower(sha.GetHashAndReset())[..16];
    }

    private const int Chunk = 1024;

    /// <summary>Header (three int64: images, tokens per image, width), then the tokens as float32, image by image.</summary>
    private void Write(string file)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        var partial = file + ".partial";
        using (var stream = new FileStream(partial, FileMode.Create, FileAccess.Write))
        using (var writer = new BinaryWriter(stream))
        {
            foreach (long size in _tokens!.shape) writer.Write(size);
            for (int start = 0; start < Count; start += Chunk)
            {
                using var part = _tokens.narrow(0, start, Math.Min(Chunk, Count - start)).contiguous();
                writer.Write(MemoryMarshal.AsBytes(part.data<float>().ToArray().AsSpan()));
            }
        }
        File.Move(partial, file, overwrite: true);
    }

    /// <summary>The tokens written by <see cref="Write"/>, or null when the file is absent or does not hold this cache's images.</summary>
    private Tensor? Read(string file)
    {
        if (!File.Exists(file)) return null;
        using var stream = File.OpenRead(file);
        using var reader = new BinaryReader(stream);
        if (stream.Length < 24) return null;
        long images = reader.ReadInt64(), tokens = reader.ReadInt64(), width = reader.ReadInt64();
        if (images != Count || tokens < 1 || width < 1 || stream.Length != 24 + images * tokens * width * sizeof(float)) return null;
        var result = torch.empty(images, tokens, width, dtype: ScalarType.Float32);
        result.DetachFromDisposeScope();
        for (int start = 0; start < Count; start += Chunk)
        {
            int n = Math.Min(Chunk, Count - start);
            var values = new float[n * tokens * width];
            stream.ReadExactly(MemoryMarshal.AsBytes(values.AsSpan()));
            using var scope = torch.NewDisposeScope();
            result.narrow(0, start, n).copy_(torch.tensor(values).view(n, tokens, width));
        }
        return result;
    }

    public void Dispose() => _tokens?.Dispose();
}
