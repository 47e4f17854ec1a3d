// MSBuild task: mark one ELF version need (Vernaux entry) weak in a shared library, so that the dynamic loader
// accepts the library when the system lacks that version. ELF64 little-endian only (x86-64, aarch64).
// Spec: System V gABI, "Symbol Versioning" (SHT_GNU_verneed 0x6ffffffe, Elf64_Verneed / Elf64_Vernaux,
// VER_FLG_WEAK = 0x2). No-op when the library has no such need, when it is already weak, or when the build
// machine's libstdc++ already provides the version.
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class PatchElfVersionNeed : Task
{
    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string VersionName { get; set; } = "";
    /// <summary>Patch even where the build machine's libstdc++ has the version: for a package (a tool) that runs elsewhere.</summary>
    public bool Always { get; set; }

    static readonly string[] LibStdCxxCandidates =
    {
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
    };

    public override bool Execute()
    {
        if (!Always && SystemHasVersion())
        {
            Log.LogMessage(MessageImportance.Low, $"system libstdc++ provides {VersionName}: nothing to patch");
            return true;
        }
        foreach (var item in Files)
        {
            string path = item.ItemSpec;
            try
            {
                byte[] elf = File.ReadAllBytes(path);
                int changed = MarkWeak(elf, VersionName);
                if (changed == 0) continue;
                // Write a new file and rename it over the copy: the output copy may share its inode with another
                // file (hard links), which must never change.
                string tmp = path + ".patching";
                File.WriteAllBytes(tmp, elf);
                File.Delete(path);
                File.Move(tmp, path);
                Log.LogMessage(MessageImportance.High, $"QLoraNet: marked version need {VersionName} weak in {path}");
            }
            catch (Exception e)
            {
                Log.LogWarning($"QLoraNet: could not patch {path}: {e.Message}");
            }
        }
        return !Log.HasLoggedErrors;
    }

    bool SystemHasVersion()
    {
        foreach (var c in LibStdCxxCandidates)
        {
            if (!File.Exists(c)) continue;
            byte[] bytes = File.ReadAllBytes(c);
            return IndexOf(bytes, Encoding.ASCII.GetBytes(VersionName + "\0")) >= 0;
        }
        return false; // no system libstdc++ found where we look: patching is harmless (weak need)
    }

    static int IndexOf(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && hay[i + j] == needle[j]) j++;
            if (j == needle.Length) return i;
        }
        return -1;
    }

    /// <summary>Returns the number of Vernaux entries changed.</summary>
    public static int MarkWeak(byte[] elf, string versionName)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1) throw new InvalidDataException("only ELF64 little-endian is supported");
        long shoff = BitConverter.ToInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        int changed = 0;
        for (int s = 0; s < shnum; s++)
        {
            long sh = shoff + (long)s * shentsize;
            uint type = BitConverter.ToUInt32(elf, (int)sh + 4);
            if (type != 0x6ffffffe) continue; // SHT_GNU_verneed
            long offset = BitConverter.ToInt64(elf, (int)sh + 0x18);
            uint link = BitConverter.ToUInt32(elf, (int)sh + 0x28); // string table section
            long strOff = BitConverter.ToInt64(elf, (int)(shoff + (long)link * shentsize) + 0x18);
            long vn = offset;
            while (true)
            {
                int cnt = BitConverter.ToUInt16(elf, (int)vn + 2);
                uint aux = BitConverter.ToUInt32(elf, (int)vn + 8);
                uint next = BitConverter.ToUInt32(elf, (int)vn + 12);
                long va = vn + aux;
                for (int a = 0; a < cnt; a++)
                {
                    uint name = BitConverter.ToUInt32(elf, (int)va + 8);
                    if (ReadCString(elf, strOff + name) == versionName)
                    {
                        int flagsAt = (int)va + 4;
                        ushort flags = BitConverter.ToUInt16(elf, flagsAt);
                        if ((flags & 0x2) == 0)
                        {
                            flags |= 0x2; // VER_FLG_WEAK
                            elf[flagsAt] = (byte)(flags & 0xff);
                            elf[flagsAt + 1] = (byte)(flags >> 8);
                            changed++;
                        }
                    }
                    uint vnaNext = BitConverter.ToUInt32(elf, (int)va + 12);
                    if (vnaNext == 0) break;
                    va += vnaNext;
                }
                if (next == 0) break;
                vn += next;
            }
        }
        return changed;
    }

    static string ReadCString(byte[] b, long at)
    {
        int end = (int)at;
        while (end < b.Length && b[end] != 0) end++;
        return Encoding.ASCII.GetString(b, (int)at, end - (int)at);
    }
}
