using System.Text.RegularExpressions;

namespace EfficientVlm.Grains.Abstractions;

/// <summary>Ids of models and variants: they appear in blob names and URLs, so keep them plain.</summary>
public static partial class Identifiers
{
    public const int MaxLength = 96;

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]*$")]
    private static partial Regex Pattern();

    /// <exception cref="ArgumentException">Empty, longer than 96 or not lower-case letters, digits, '.', '_' and '-'.</exception>
    public static void Validate(string? id, string what)
    {
        if (string.IsNullOrEmpty(id)) throw new ArgumentException($"The {what} is empty.");
        if (id.Length > MaxLength) throw new ArgumentException($"The {what} is longer than {MaxLength} characters.");
        if (!Pattern().IsMatch(id))
            throw new ArgumentException($"The {what} '{id}' may use only lower-case letters, digits, '.', '_' and '-', and must start with a letter or digit.");
    }

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex HashPattern();

    /// <exception cref="ArgumentException">Not a SHA-256 content hash (64 lower-case hex digits).</exception>
    public static void ValidateHash(string? hash, string what)
    {
        if (string.IsNullOrEmpty(hash)) throw new ArgumentException($"The {what} is empty.");
        if (!HashPattern().IsMatch(hash))
            throw new ArgumentException($"The {what} '{(hash.Length > 80 ? hash[..80] + "..." : hash)}' is not a content hash (64 lower-case hex digits).");
    }
}
