using System.Runtime.InteropServices;
using TorchSharp;

namespace EfficientVlm.Model.Runtime;

/// <summary>Loads libtorch once and turns a load failure into an error that says what to do.</summary>
public static class TorchRuntime
{
    private static readonly Lazy<string> Loaded = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Loads the native libraries (idempotent). Returns a one-line description.</summary>
    public static string EnsureLoaded() => Loaded.Value;

    private static string Load()
    {
        try
        {
            // Touching torch runs TorchSharp's native loader.
            var cuda = torch.cuda.is_available();
            return $"TorchSharp {typeof(torch).Assembly.GetName().Version} on {RuntimeInformation.OSDescription}, cuda={cuda}";
        }
        catch (TypeInitializationException e)
        {
            throw new InvalidOperationException(
                "libtorch failed to load. On Debian 12 the build output's libLibTorchSharp.so must be patched " +
                "(build/TorchSharp.targets does it during dotnet build/publish; rebuild instead of copying binaries). " +
                "See docs/platform.md. Inner error: " + (e.InnerException?.Message ?? e.Message), e);
        }
    }
}
