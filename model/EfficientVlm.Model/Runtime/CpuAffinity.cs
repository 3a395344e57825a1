using System.ComponentModel;
using System.Runtime.InteropServices;

namespace EfficientVlm.Model.Runtime;

/// <summary>
/// Pins the calling thread to a set of CPUs (Linux <c>sched_setaffinity</c> on thread id 0, the caller).
/// Threads the pinned thread starts afterwards (libtorch's intra-op pool) inherit the set.
/// </summary>
public static class CpuAffinity
{
    private const int MaskBytes = 128; // room for 1024 CPUs

    [DllImport("libc", SetLastError = true)]
    private static extern int sched_setaffinity(int pid, nint size, byte[] mask);

    /// <exception cref="PlatformNotSupportedException">Not on Linux.</exception>
    /// <exception cref="ArgumentException">A CPU number outside 0..1023.</exception>
    /// <exception cref="Win32Exception">The kernel refused (for example a CPU this container may not use).</exception>
    public static void PinCurrentThread(IReadOnlyCollection<int> cpus)
    {
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException("Pinning executor threads to CPUs is only supported on Linux.");
        if (cpus.Count == 0) throw new ArgumentException("Give at least one CPU to pin to.");
        var mask = new byte[MaskBytes];
        foreach (int cpu in cpus)
        {
            if (cpu is < 0 or >= MaskBytes * 8) throw new ArgumentException($"CPU {cpu} is outside 0..{MaskBytes * 8 - 1}.");
            mask[cpu / 8] |= (byte)(1 << (cpu % 8));
        }
        if (sched_setaffinity(0, MaskBytes, mask) != 0)
            throw new Win32Exception(Marshal.GetLastPInvokeError(), $"Could not pin the thread to CPUs {string.Join(",", cpus)}.");
    }
}
