// MSBuild task (compiled by RoslynCodeTaskFactory from build/TorchSharp.targets, against
// netstandard2.0: keep to APIs that exist there).
//
// libLibTorchSharp.so (TorchSharp 0.107) was linked with GCC 13 and declares that it needs the
// symbol version GLIBCXX_3.4.32 from libstdc++.so.6. Debian 12's libstdc++ stops at 3.4.30, so the
// dynamic loader refuses the library although nothing binds to a symbol of that version (the
// only one, _ZSt21ios_base_library_initv, has no relocation against it). Marking that version
// need WEAK (VER_FLG_WEAK in vna_flags of its Vernaux entry in .gnu.version_r) makes glibc accept
// the library. This task does exactly that, on the copy in the build output, and only when the
// host's libstdc++ lacks the version. Running it again is a no-op.
#nullable enable
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class ElfWeakVersionNeed : Task
{
    /// <summary>Shared libraries to patch (missing files are ignored).</summary>
    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();

    /// <summary>The symbol version to weaken, e.g. GLIBCXX_3.4.32.</summary>
    [Required] public string Version { get; set; } = "";

    /// <summary>Candidate paths of the host libstdc++ (first existing one is checked).</summary>
    public string HostLibrary { get; set; } = "";

    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    public override bool Execute()
    {
        string? host = null;
        foreach (var candidate in HostLibrary.Split(new[] { ';' }, StringSplitOptions.RemoveEmptyEntries))
            if (File.Exists(candidate.Trim())) { host = candidate.Trim(); break; }
        if (host != null && Contains(File.ReadAllBytes(host), Encoding.ASCII.GetBytes(Version + "\0")))
            return true; // the host provides the version: nothing to do.

        foreach (var item in Files)
        {
            var path = item.ItemSpec;
            if (!File.Exists(path)) continue;
            try
            {
                var result = Patch(path, Version);
                if (result == PatchResult.Patched)
                    Log.LogMessage(MessageImportance.High,
                        $"TorchSharp native fix: marked {Version} weak in {path} (host libstdc++ {host ?? "not found"} lacks it).");
            }
            catch (Exception e)
            {
                Log.LogError($"TorchSharp native fix failed on {path}: {e.Message}");
                return false;
            }
        }
        return !Log.HasLoggedErrors;
    }

    public enum PatchResult { NotFound, AlreadyWeak, Patched }

    /// <summary>Sets VER_FLG_WEAK on the version need named <paramref name="version"/>.</summary>
    public static PatchResult Patch(string path, string version)
    {
        var elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("only little-endian ELF64 is supported");

        ulong shoff = BitConverter.ToUInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)shoff + i * shentsize);
            if (BitConverter.ToUInt32(elf, sh + 4) != ShtGnuVerneed) continue;
            int offset = checked((int)BitConverter.ToUInt64(elf, sh + 0x18));
            int link = (int)BitConverter.ToUInt32(elf, sh + 0x28);
            int strtab = checked((int)BitConverter.ToUInt64(elf, checked((int)shoff + link * shentsize) + 0x18));

            // Verneed: vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32.
            int vn = offset;
            while (true)
            {
                int count = BitConverter.ToUInt16(elf, vn + 2);
                int aux = vn + (int)BitConverter.ToUInt32(elf, vn + 8);
                for (int k = 0; k < count; k++)
                {
                    // Vernaux: vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32.
                    int name = strtab + (int)BitConverter.ToUInt32(elf, aux + 8);
                    if (ReadCString(elf, name) == version)
                    {
                        ushort flags = BitConverter.ToUInt16(elf, aux + 4);
                        if ((flags & VerFlgWeak) != 0) return PatchResult.AlreadyWeak;
                        BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, aux + 4);
                        var temp = path + ".patching";
                        File.WriteAllBytes(temp, elf);
                        File.Copy(temp, path, overwrite: true);
                        File.Delete(temp);
                        return PatchResult.Patched;
                    }
                    aux += (int)BitConverter.ToUInt32(elf, aux + 12);
                }
                uint next = BitConverter.ToUInt32(elf, vn + 12);
                if (next == 0) break;
                vn += (int)next;
            }
        }
        return PatchResult.NotFound;
    }

    private static string ReadCString(byte[] data, int start)
    {
        int end = start;
        while (end < data.Length && data[end] != 0) end++;
        return Encoding.ASCII.GetString(data, start, end - start);
    }

    private static bool Contains(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= haystack.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && haystack[i + j] == needle[j]) j++;
            if (j == needle.Length) return true;
        }
        return false;
    }
}
