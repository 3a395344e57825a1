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
    private readonly VlmModel _model;
    private readonly Collate _collate;
    private readonly string? _folder;
    private Tensor? _tokens;

    /// <summary>
    /// The distinct images of <paramref name="paths"/>, in first-seen order, as <paramref name="model"/>'s vision encoder
    /// sees them after <paramref name="collate"/> read them; kept on disk in <paramref name="folder"/> when given. Refuses
    /// a model whose vision encoder still trains (its tokens change every step) or a cache over <see cref="MaxBytes"/>.
    /// </summary>
    public VisionTokenCache(VlmModel model, Collate collate, IEnumerable<string> paths, string? folder = null)
    {
        _model = model;
        _collate = collate;
        _folder = folder;
        foreach (var path in paths)
            if (_index.TryAdd(path, _paths.Count)) _paths.Add(path);
        if (model.named_parameters().Any(p => p.name.StartsWith("vision.", StringComparison.Ordinal) && p.parameter.requires_grad))
            throw new ArgumentException("Vision tokens can be cached only when the vision encoder is frozen (--freeze vision).");
        long bytes = (long)Count * model.Config.ImageTokens * model.Config.Hidden * sizeof(float);
        if (bytes > MaxBytes)
            throw new ArgumentException($"The vision-token cache of {Count:N0} images would take {bytes / (1 << 20):N0} MiB " +
                $"(at most {MaxBytes / (1 << 20):N0} MiB); train without it.");
    }

    public int Count => _paths.Count;

    /// <summary>Whether the tokens were read from the folder rather than encoded.</summary>
    public bool WasRead { get; private set; }

    /// <summary>Where an image's tokens sit in the cache.</summary>
    public int IndexOf(string path) =>
        _index.TryGetValue(path, out int i) ? i : throw new KeyNotFoundException($"{path} is not one of the cached images.");

    /// <summary>
    /// The tokens [B, N, D] of the images at <paramref name="indexes"/>, on <paramref name="device"/>; the first call
    /// encodes every image (on the calling thread, which must be the device executor's).
    /// </summary>
    public Tensor Gather(int[] indexes, Device device)
    {
        if (Count == 0) throw new InvalidOperationException("The cache holds no images.");
        if (_tokens is null)
        {
            string? file = _folder is null ? null : Path.Combine(_folder, $"vision-tokens-{Key()}.bin");
            if (file is not null && Read(file) is { } read)
            {
                _tokens = read;
                WasRead = true;
            }
            else
            {
                Build(device);
                if (file is not null) Write(file);
            }
        }
        using var at = torch.tensor(indexes, dtype: ScalarType.Int64);
        return _tokens!.index_select(0, at).to(device);
    }

    private void Build(Device device)
    {
        Tensor? tokens = null;
        bool training = _model.training;
        _model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            for (int start = 0; start < Count; start += EncodeBatch)
            {
                using var scope = torch.NewDisposeScope();
                int n = Math.Min(EncodeBatch, Count - start);
                var encoded = _model.EncodeImage(_collate.Images(_paths.GetRange(start, n)).ToTensor(device)).Last;   // [n, N, D]
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
            _model.train(training);
        }
        _tokens = tokens;
    }

    /// <summary>SHA-256 (first 16 hex digits) of the vision weights, in name order, and of each image's path and length.</summary>
    private string Key()
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var (name, parameter) in _model.named_parameters().Where(p => p.name.StartsWith("vision.", StringComparison.Ordinal)).OrderBy(p => p.name, StringComparer.Ordinal))
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

/// <summary>
/// The vision tokens of a data set's caption train images (<see cref="VisionTokenCache"/>), gathered by image id: the
/// frozen-vision caption stages (text assignment, retrieval, captioning) share one file per encoder.
/// </summary>
public sealed class CaptionImageTokens : IDisposable
{
    private readonly VisionTokenCache _cache;
    private readonly Dictionary<long, int> _rowOfImage;

    public CaptionImageTokens(VlmModel model, TaskData data, string? folder)
    {
        var images = data.Captions("train");
        _cache = new VisionTokenCache(model, data.Collate, images.Select(i => i.ImagePath), folder);
        _rowOfImage = images.ToDictionary(i => i.ImageId, i => _cache.IndexOf(i.ImagePath));
    }

    /// <summary>The distinct train images whose tokens are held.</summary>
    public int Count => _cache.Count;

    /// <summary>Whether the tokens were read from the folder rather than encoded (after the first gather).</summary>
    public bool WasRead => _cache.WasRead;

    /// <summary>The tokens [B, N, D] of the images with these ids (the first call encodes or reads them all).</summary>
    public Tensor Gather(long[] imageIds, Device device) => _cache.Gather(imageIds.Select(id => _rowOfImage[id]).ToArray(), device);

    public void Dispose() => _cache.Dispose();
}
