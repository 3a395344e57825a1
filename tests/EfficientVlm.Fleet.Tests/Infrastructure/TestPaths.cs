using System.Reflection;

namespace EfficientVlm.Fleet.Tests.Infrastructure;

/// <summary>Paths baked in at build time (see the test project file).</summary>
public static class TestPaths
{
    private static string Metadata(string key) =>
        typeof(TestPaths).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == key).Value!;

    public static string RepositoryRoot => Path.GetFullPath(Metadata("RepositoryRoot"));

    public static string SiloAssembly => Path.GetFullPath(Metadata("SiloAssembly"));

    /// <summary>An excerpt of a real annotation format, copied next to the test assembly (Fixtures/formats).</summary>
    public static string FormatFixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "formats", name);
}
