using EfficientVlm.Fleet.Tests.Infrastructure;
using EfficientVlm.Model.Images;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace EfficientVlm.Fleet.Tests.Model;

public sealed class ImageLoaderTests
{
    private readonly ImageLoader _loader = new(new ImageLimits { MaxBytes = 1_000_000, MaxPixels = 4_000_000 });

    private static byte[] Encode(int width, int height, Rgb24 colour, SixLabors.ImageSharp.Formats.IImageEncoder encoder)
    {
        using var image = new Image<Rgb24>(width, height, colour);
        using var stream = new MemoryStream();
        image.Save(stream, encoder);
        return stream.ToArray();
    }

    private static byte[] Png(int width = 40, int height = 30) => Encode(width, height, new Rgb24(255, 0, 128), new PngEncoder());

    [Fact]
    public void Png_and_jpeg_decode_resize_and_normalise_with_clip_statistics()
    {
        var data = _loader.Load(Png(), 16);
        Assert.Equal(3 * 16 * 16, data.Length);
        Assert.Equal((1f - ImageLoader.ClipMean[0]) / ImageLoader.ClipStd[0], data[0], 4);           // R = 255
        Assert.Equal((0f - ImageLoader.ClipMean[1]) / ImageLoader.ClipStd[1], data[256], 4);         // G = 0
        Assert.Equal((128 / 255f - ImageLoader.ClipMean[2]) / ImageLoader.ClipStd[2], data[512], 4); // B = 128

        var jpeg = _loader.Load(Encode(20, 20, new Rgb24(10, 200, 30), new JpegEncoder { Quality = 95 }), 8);
        Assert.Equal(3 * 8 * 8, jpeg.Length);
        Assert.InRange(jpeg[64] * ImageLoader.ClipStd[1] + ImageLoader.ClipMean[1], 190 / 255f, 210 / 255f);
    }

    private static ImageRejection Rejected(ImageLoader loader, byte[] bytes)
    {
        var e = Assert.Throws<ImageRejectedException>(() => loader.Load(bytes, 16));
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
        return e.Reason;
    }

    [Fact]
    public void Empty_garbage_and_other_formats_are_refused()
    {
        Assert.Equal(ImageRejection.Empty, Rejected(_loader, []));
        Assert.Equal(ImageRejection.UnsupportedFormat, Rejected(_loader, "this is not an image"u8.ToArray()));
        Assert.Equal(ImageRejection.UnsupportedFormat, Rejected(_loader, Encode(8, 8, new Rgb24(), new BmpEncoder())));
        Assert.Equal(ImageRejection.TooManyBytes, Rejected(_loader, new byte[1_000_001]));
    }

    [Fact]
    public void Truncated_png_and_jpeg_are_refused()
    {
        var png = Png();
        Assert.Equal(ImageRejection.Truncated, Rejected(_loader, png[..(png.Length - 20)]));
        var jpeg = Encode(64, 64, new Rgb24(1, 2, 3), new JpegEncoder());
        Assert.Equal(ImageRejection.Truncated, Rejected(_loader, jpeg[..(jpeg.Length / 2)]));
    }

    [Fact]
    public void A_header_claiming_a_huge_image_is_refused_before_decoding()
    {
        // A small valid PNG whose IHDR is rewritten to claim 20000 x 20000 pixels (a decompression bomb).
        var png = MalformedInputs.Bomb(Png(8, 8), 20000, 20000);
        var before = GC.GetTotalAllocatedBytes();
        Assert.Equal(ImageRejection.TooManyPixels, Rejected(_loader, png));
        Assert.True(GC.GetTotalAllocatedBytes() - before < 50_000_000, "the loader must not allocate the claimed image");
    }

    [Fact]
    public void Corrupt_pixel_data_behind_a_valid_header_is_refused()
    {
        var png = Png(32, 32);
        // Overwrite the compressed IDAT payload (after the 8-byte signature + 25-byte IHDR chunk + IDAT length/type).
        for (int i = 41; i < png.Length - 16; i++) png[i] = 0x5A;
        Assert.Equal(ImageRejection.Corrupt, Rejected(_loader, png));
    }
}
