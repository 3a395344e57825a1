using System.Reflection;

namespace EfficientVlm.Fleet.Tests.Infrastructure;

/// <summary>Paths baked in at build time (see the test project file).</summary>
public static class TestPaths
{
    private static string Metadata(string key) =>
        typeof(TestPaths).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == key).Value!;

    public static string RepositoryRoot => Path.GetFullPath(Metadata("RepositoryRoot"));

    public static string SiloAssembly => Path.GetFullPath(Metadata("SiloAssembly"));
}
