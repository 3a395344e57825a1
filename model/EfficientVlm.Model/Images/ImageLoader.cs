using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Memory;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace EfficientVlm.Model.Images;

/// <summary>Why an image was refused.</summary>
public enum ImageRejection
{
    Empty,
    TooManyBytes,
    UnsupportedFormat,
    TooManyPixels,
    Truncated,
    Corrupt,
}

/// <summary>An image the loader will not decode; <see cref="Reason"/> says why, the message says it for people.</summary>
public sealed class ImageRejectedException(ImageRejection reason, string message, Exception? inner = null)
    : Exception(message, inner)
{
    public ImageRejection Reason { get; } = reason;
}

/// <summary>Limits on input images.</summary>
public sealed record ImageLimits
{
    /// <summary>Largest encoded file accepted.</summary>
    public long MaxBytes { get; init; } = 20 * 1024 * 1024;

    /// <summary>Largest width x height accepted (checked from the header, before decoding).</summary>
    public long MaxPixels { get; init; } = 40_000_000;

    /// <summary>Cap on ImageSharp's pooled memory for one decode.</summary>
    public int AllocationLimitMegabytes { get; init; } = 256;
}

/// <summary>
/// Hardened image input: PNG and JPEG only; the header is identified first and the pixel count
/// checked before anything is decoded; allocations are capped; truncated files are refused (a PNG
/// must end with its IEND chunk, a JPEG with its EOI marker), since ImageSharp may otherwise decode
/// them silently as partial images. Output: RGB resized to the model's square resolution,
/// normalised with the CLIP mean and standard deviation, channels first ([3, H, W] as a flat array).
/// Thread-safe; touches no tensors (runs off the device executor).
/// </summary>
public sealed class ImageLoader
{
    public static readonly float[] ClipMean = [0.48145466f, 0.4578275f, 0.40821073f];
    public static readonly float[] ClipStd = [0.26862954f, 0.26130258f, 0.27577711f];

    private readonly Configuration _configuration;

    public ImageLoader(ImageLimits? limits = null)
    {
        Limits = limits ?? new ImageLimits();
        _configuration = new Configuration(new PngConfigurationModule(), new JpegConfigurationModule())
        {
            MemoryAllocator = MemoryAllocator.Create(new MemoryAllocatorOptions
            {
                AllocationLimitMegabytes = Limits.AllocationLimitMegabytes,
            }),
        };
    }

    public ImageLimits Limits { get; }

    /// <summary>Decodes, checks and resizes to <paramref name="size"/> x <paramref name="size"/>; returns [3 * size * size] CHW floats.</summary>
    /// <exception cref="ImageRejectedException">Every way the input can be refused, with its reason.</exception>
    public float[] Load(ReadOnlySpan<byte> bytes, int size)
    {
        using var image = Decode(bytes);
        return ToTensorData(image, size);
    }

    /// <summary>Decodes and checks without resizing (callers that keep the original).</summary>
    public Image<Rgb24> Decode(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length == 0) throw new ImageRejectedException(ImageRejection.Empty, "The image is empty (0 bytes).");
        if (bytes.Length > Limits.MaxBytes)
            throw new ImageRejectedException(ImageRejection.TooManyBytes,
                $"The image is {bytes.Length:N0} bytes; the limit is {Limits.MaxBytes:N0}.");
        var format = Sniff(bytes);
        if (format is null)
            throw new ImageRejectedException(ImageRejection.UnsupportedFormat, "The image is not a PNG or JPEG file.");

        var buffer = bytes.ToArray();
        if (!Complete(buffer, format))
            throw new ImageRejectedException(ImageRejection.Truncated, $"The {format} file is truncated (no {(format == "PNG" ? "IEND chunk" : "end-of-image marker")}).");
        IImageInfo? info;
        try
        {
            using var stream = new MemoryStream(buffer, writable: false);
            info = Image.Identify(_configuration, stream);
        }
        catch (Exception e) when (e is ImageFormatException or InvalidDataException or ArgumentException)
        {
            throw new ImageRejectedException(ImageRejection.Corrupt, $"The {format} header is corrupt: {e.Message}", e);
        }
        if (info is null)
            throw new ImageRejectedException(ImageRejection.Corrupt, $"The {format} header could not be read.");
        if (info.Width <= 0 || info.Height <= 0)
            throw new ImageRejectedException(ImageRejection.Corrupt, $"The {format} header gives a {info.Width}x{info.Height} image.");
        long pixels = (long)info.Width * info.Height;
        if (pixels > Limits.MaxPixels)
            throw new ImageRejectedException(ImageRejection.TooManyPixels,
                $"The image is {info.Width}x{info.Height} ({pixels:N0} pixels); the limit is {Limits.MaxPixels:N0} pixels.");

        try
        {
            return Image.Load<Rgb24>(_configuration, buffer);
        }
        catch (Exception e) when (e is ImageFormatException or InvalidMemoryOperationException or InvalidDataException
                                      or ArgumentException or IndexOutOfRangeException or NotSupportedException)
        {
            throw new ImageRejectedException(ImageRejection.Corrupt, $"The {format} data is corrupt: {e.Message}", e);
        }
    }

    /// <summary>Resize to size x size (bicubic) and normalise: [3 * size * size] CHW.</summary>
    public static float[] ToTensorData(Image<Rgb24> image, int size)
    {
        using var resized = image.Width == size && image.Height == size
            ? image.Clone()
            : image.Clone(c => c.Resize(new ResizeOptions { Size = new Size(size, size), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Bicubic }));
        var data = new float[3 * size * size];
        int plane = size * size;
        resized.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < size; y++)
            {
                var row = rows.GetRowSpan(y);
                for (int x = 0; x < size; x++)
                {
                    var p = row[x];
                    int at = y * size + x;
                    data[at] = (p.R / 255f - ClipMean[0]) / ClipStd[0];
                    data[plane + at] = (p.G / 255f - ClipMean[1]) / ClipStd[1];
                    data[2 * plane + at] = (p.B / 255f - ClipMean[2]) / ClipStd[2];
                }
            }
        });
        return data;
    }

    private static string? Sniff(ReadOnlySpan<byte> bytes)
    {
        ReadOnlySpan<byte> png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
        if (bytes.StartsWith(png)) return "PNG";
        if (bytes.Length >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return "JPEG";
        return null;
    }

    private static bool Complete(byte[] bytes, string format)
    {
        if (format == "PNG")
        {
            // ... 00 00 00 00 'I' 'E' 'N' 'D' crc(4)
            ReadOnlySpan<byte> iend = [0x49, 0x45, 0x4E, 0x44];
            return bytes.Length >= 12 && bytes.AsSpan(bytes.Length - 8, 4).SequenceEqual(iend);
        }
        // JPEG: the last non-padding bytes are FF D9 (some writers pad with zeros or newlines after it).
        int end = bytes.Length;
        while (end > 2 && (bytes[end - 1] == 0x00 || bytes[end - 1] == 0x0A || bytes[end - 1] == 0x0D)) end--;
        return end >= 4 && bytes[end - 2] == 0xFF && bytes[end - 1] == 0xD9;
    }
}
