namespace EfficientVlm.Fleet.Tests.Infrastructure;

/// <summary>One generated bad request: what it is, its image bytes, its text, and the variant it names.</summary>
public sealed record MalformedCase(string Kind, byte[] Image, string Text, string? Variant = null);

/// <summary>
/// Generates malformed requests from one valid PNG, reproducibly by seed: garbage, truncated, corrupt and
/// empty images, decompression bombs (a header claiming a huge image), empty, overlong and invalid text
/// (lone surrogates, control characters, U+FFFD from undecodable UTF-8), unknown and malformed variant ids.
/// </summary>
public static class MalformedInputs
{
    public static IEnumerable<MalformedCase> Generate(byte[] validPng, string validText, int count, int seed)
    {
        var random = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            yield return (i % 11) switch
            {
                0 => new MalformedCase("garbage image", Bytes(random, random.Next(1, 4000)), validText),
                1 => new MalformedCase("truncated png", validPng[..random.Next(8, validPng.Length - 12)], validText),
                2 => new MalformedCase("decompression bomb", Bomb(validPng, (uint)random.Next(20_000, 60_000), (uint)random.Next(20_000, 60_000)), validText),
                3 => new MalformedCase("corrupt pixel data", Corrupt(validPng, random), validText),
                4 => new MalformedCase("empty image", [], validText),
                5 => new MalformedCase("empty text", validPng, random.Next(2) == 0 ? "" : new string(' ', random.Next(1, 20))),
                6 => new MalformedCase("overlong text", validPng, new string('x', random.Next(513, 5000))),
                7 => new MalformedCase("invalid text", validPng, (random.Next(3)) switch
                {
                    0 => "what " + (char)0xD83D + " is it", // lone surrogate
                    1 => "what\u0001is it",                // control character
                    _ => "what \uFFFD\uFFFD is it",         // undecodable UTF-8, as decoders hand it over
                }),
                8 => new MalformedCase("unknown variant", validPng, validText, "no-such-variant-" + random.Next(1000)),
                9 => new MalformedCase("malformed variant id", validPng, validText, random.Next(2) == 0 ? "Upper Case" : "../../etc"),
                _ => new MalformedCase("garbage with png signature", [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, .. Bytes(random, random.Next(1, 500))], validText),
            };
        }
    }

    private static byte[] Bytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    /// <summary>The PNG with its IHDR rewritten to claim <paramref name="width"/> x <paramref name="height"/> (CRC fixed, so it parses).</summary>
    public static byte[] Bomb(byte[] png, uint width, uint height)
    {
        var bomb = png.ToArray();
        WriteBigEndian(bomb, 16, width);
        WriteBigEndian(bomb, 20, height);
        WriteBigEndian(bomb, 29, Crc32(bomb.AsSpan(12, 17)));
        return bomb;
    }

    private static byte[] Corrupt(byte[] png, Random random)
    {
        var corrupt = png.ToArray();
        for (int i = 41; i < corrupt.Length - 16; i++) corrupt[i] = (byte)random.Next(256);
        return corrupt;
    }

    private static void WriteBigEndian(byte[] buffer, int offset, uint value)
    {
        buffer[offset] = (byte)(value >> 24);
        buffer[offset + 1] = (byte)(value >> 16);
        buffer[offset + 2] = (byte)(value >> 8);
        buffer[offset + 3] = (byte)value;
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (var b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
        }
        return ~crc;
    }

    /// <summary>Peak resident memory of a process (VmHWM, bytes), from /proc.</summary>
    public static long PeakRss(int pid)
    {
        var line = File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
    }
}
