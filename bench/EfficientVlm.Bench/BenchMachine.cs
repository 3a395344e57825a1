using System.Runtime.InteropServices;

namespace EfficientVlm.Bench;

/// <summary>What every benchmark table states: when, where, with what.</summary>
public static class BenchMachine
{
    public static string Describe(int torchThreads)
    {
        string cpu = "unknown CPU";
        try
        {
            cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException)
        {
            // not Linux: keep "unknown CPU".
        }
        return $"{DateTime.UtcNow:yyyy-MM-dd}, {cpu}, {Environment.ProcessorCount} logical cores, " +
               $"{RuntimeInformation.OSDescription}, .NET {Environment.Version}, torch threads {torchThreads}";
    }
}
