using System.Text.RegularExpressions;

namespace EfficientVlm.Grains;

/// <summary>Ids of models and variants: they appear in blob names and URLs, so keep them plain.</summary>
public static partial class Identifiers
{
    public const int MaxLength = 64;

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]*$")]
    private static partial Regex Pattern();

    /// <exception cref="ArgumentException">Empty, longer than 64 or not lower-case letters, digits, '.', '_' and '-'.</exception>
    public static void Validate(string? id, string what)
    {
        if (string.IsNullOrEmpty(id)) throw new ArgumentException($"The {what} is empty.");
        if (id.Length > MaxLength) throw new ArgumentException($"The {what} is longer than {MaxLength} characters.");
        if (!Pattern().IsMatch(id))
            throw new ArgumentException($"The {what} '{id}' may use only lower-case letters, digits, '.', '_' and '-', and must start with a letter or digit.");
    }
}
