using System.Buffers.Binary;
using System.Text;

namespace QLoraNet.Native;

/// <summary>
/// What the dynamic loader reads from a shared library, read the same way: its SONAME, the libraries it needs
/// (DT_NEEDED), where it looks for them (DT_RUNPATH, else DT_RPATH), and its dynamic symbols. ELF64 little-endian only
/// (x86-64, aarch64). Spec: System V gABI ch. 4-5 (section headers, .dynamic, .dynsym) and the LSB's symbol versioning
/// (.gnu.version, SHT_GNU_versym 0x6fffffff). Only the headers and the dynamic sections are read, never the whole file
/// (libtorch_cpu.so is ~500 MB).
/// </summary>
public sealed class ElfLibrary
{
    const int ShtDynamic = 6, ShtDynsym = 11, ShtGnuVersym = 0x6fffffff;
    const long DtNeeded = 1, DtSoname = 14, DtRpath = 15, DtRunpath = 29;
    /// <summary>e_machine values: EM_X86_64, EM_AARCH64.</summary>
    public const ushort X8664 = 62, Aarch64 = 183;

    public string Path { get; }
    public ushort Machine { get; }
    public string? SoName { get; }
    public IReadOnlyList<string> Needed { get; }
    /// <summary>DT_RUNPATH (or DT_RPATH when there is none) split at ':', with $ORIGIN replaced by the library's directory.</summary>
    public IReadOnlyList<string> SearchPaths { get; }

    readonly Section? _dynsym, _dynstr, _versym;

    ElfLibrary(string path, ushort machine, string? soName, IReadOnlyList<string> needed, IReadOnlyList<string> searchPaths,
        Section? dynsym, Section? dynstr, Section? versym)
    {
        (Path, Machine, SoName, Needed, SearchPaths) = (path, machine, soName, needed, searchPaths);
        (_dynsym, _dynstr, _versym) = (dynsym, dynstr, versym);
    }

    readonly record struct Section(int Type, long Offset, long Size, int Link);

    /// <summary>Reads the headers and the dynamic section; a one-line <see cref="InvalidDataException"/> when it is not an ELF64 little-endian shared library.</summary>
    public static ElfLibrary Read(string path)
    {
        using var file = File.OpenHandle(path);
        long length = RandomAccess.GetLength(file);
        var magic = ReadAt(file, 0, Math.Min(4, length), length, path);
        if (magic.Length < 4 || magic[0] != 0x7f || magic[1] != 'E' || magic[2] != 'L' || magic[3] != 'F')
            throw new InvalidDataException($"{path}: not an ELF file");
        var header = ReadAt(file, 0, 64, length, path);
        if (header[4] != 2 || header[5] != 1) throw new InvalidDataException($"{path}: not a 64-bit little-endian ELF file");
        ushort type = U16(header, 16), machine = U16(header, 18);
        if (type != 3) throw new InvalidDataException($"{path}: not a shared library (ELF type {type})");
        long shoff = (long)U64(header, 40);
        int shentsize = U16(header, 58), shnum = U16(header, 60);
        if (shoff <= 0 || shentsize < 64 || shnum == 0 || shnum > 65000) throw new InvalidDataException($"{path}: no section headers");
        var table = ReadAt(file, shoff, (long)shentsize * shnum, length, path);
        var sections = new Section[shnum];
        for (int i = 0; i < shnum; i++)
        {
            int o = i * shentsize;
            sections[i] = new Section((int)U32(table, o + 4), (long)U64(table, o + 24), (long)U64(table, o + 32), (int)U32(table, o + 40));
            if (sections[i].Type != 8 /* SHT_NOBITS */ && (sections[i].Offset < 0 || sections[i].Size < 0 || sections[i].Offset + sections[i].Size > length))
                throw new InvalidDataException($"{path}: section {i} lies outside the file (truncated?)");
        }
        Section? Linked(Section s) => s.Link > 0 && s.Link < shnum ? sections[s.Link] : null;

        var dynamic = Find(sections, ShtDynamic) ?? throw new InvalidDataException($"{path}: no dynamic section");
        var strtab = Linked(dynamic) ?? throw new InvalidDataException($"{path}: dynamic section without a string table");
        var dyn = ReadAt(file, dynamic.Offset, dynamic.Size, length, path);
        var strings = ReadAt(file, strtab.Offset, strtab.Size, length, path);
        string? soName = null;
        string? runPath = null, rPath = null;
        var needed = new List<string>();
        for (int o = 0; o + 16 <= dyn.Length; o += 16)
        {
            long tag = (long)U64(dyn, o);
            if (tag == 0) break;
            ulong val = U64(dyn, o + 8);
            switch (tag)
            {
                case DtNeeded: needed.Add(Str(strings, val, path)); break;
                case DtSoname: soName = Str(strings, val, path); break;
                case DtRunpath: runPath = Str(strings, val, path); break;
                case DtRpath: rPath = Str(strings, val, path); break;
            }
        }
        string origin = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        var search = (runPath ?? rPath ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(p => p.Replace("${ORIGIN}", origin).Replace("$ORIGIN", origin)).ToList();

        var dynsym = Find(sections, ShtDynsym);
        var versym = Find(sections, ShtGnuVersym);
        return new ElfLibrary(path, machine, soName, needed, search, dynsym, dynsym is { } d ? Linked(d) : null, versym);
    }

    static Section? Find(Section[] sections, int type)
    {
        foreach (var s in sections) if (s.Type == type) return s;
        return null;
    }

    /// <summary>
    /// Undefined, non-weak symbols without a version: the ones the library expects from libraries that export
    /// unversioned symbols (libtorch does; glibc and libstdc++ version theirs, e.g. GLIBCXX_3.4).
    /// </summary>
    public IReadOnlyList<string> UnversionedImports()
    {
        var result = new List<string>();
        ForEachSymbol((name, defined, bind, version) =>
        {
            if (!defined && bind == 1 && version <= 1 && name.Length > 0) result.Add(name);
        });
        return result;
    }

    /// <summary>64-bit hashes (FNV-1a) of the global and weak symbols the library defines.</summary>
    public HashSet<ulong> ExportHashes()
    {
        var result = new HashSet<ulong>();
        ForEachSymbolBytes((name, defined, bind) => { if (defined && bind is 1 or 2) result.Add(Fnv(name)); });
        return result;
    }

    public static ulong Fnv(ReadOnlySpan<byte> bytes)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte b in bytes) { h ^= b; h *= 1099511628211UL; }
        return h;
    }

    delegate void SymbolBytes(ReadOnlySpan<byte> name, bool defined, int bind);

    void ForEachSymbol(Action<string, bool, int, int> visit)
    {
        if (_dynsym is not { } sym || _dynstr is not { } str) return;
        using var file = File.OpenHandle(Path);
        long length = RandomAccess.GetLength(file);
        var symbols = ReadAt(file, sym.Offset, sym.Size, length, Path);
        var strings = ReadAt(file, str.Offset, str.Size, length, Path);
        var versions = _versym is { } v ? ReadAt(file, v.Offset, v.Size, length, Path) : null;
        for (int i = 0; (i + 1) * 24 <= symbols.Length; i++)
        {
            int o = i * 24;
            uint nameOffset = U32(symbols, o);
            int bind = symbols[o + 4] >> 4;
            bool defined = U16(symbols, o + 6) != 0;
            int version = versions != null && 2 * i + 2 <= versions.Length ? U16(versions, 2 * i) & 0x7fff : 1;
            visit(Str(strings, nameOffset, Path), defined, bind, version);
        }
    }

    void ForEachSymbolBytes(SymbolBytes visit)
    {
        if (_dynsym is not { } sym || _dynstr is not { } str) return;
        using var file = File.OpenHandle(Path);
        long length = RandomAccess.GetLength(file);
        var symbols = ReadAt(file, sym.Offset, sym.Size, length, Path);
        var strings = ReadAt(file, str.Offset, str.Size, length, Path);
        for (int i = 0; (i + 1) * 24 <= symbols.Length; i++)
        {
            int o = i * 24;
            uint start = U32(symbols, o);
            if (start >= strings.Length) continue;
            int end = Array.IndexOf(strings, (byte)0, (int)start);
            if (end < 0) end = strings.Length;
            visit(strings.AsSpan((int)start, end - (int)start), U16(symbols, o + 6) != 0, symbols[o + 4] >> 4);
        }
    }

    static byte[] ReadAt(Microsoft.Win32.SafeHandles.SafeFileHandle file, long offset, long count, long length, string path)
    {
        if (offset < 0 || count < 0 || offset + count > length || count > int.MaxValue)
            throw new InvalidDataException($"{path}: truncated ELF file");
        var buffer = new byte[count];
        int done = 0;
        while (done < count)
        {
            int n = RandomAccess.Read(file, buffer.AsSpan(done), offset + done);
            if (n == 0) throw new InvalidDataException($"{path}: truncated ELF file");
            done += n;
        }
        return buffer;
    }

    static string Str(byte[] table, ulong offset, string path)
    {
        if (offset >= (ulong)table.Length) throw new InvalidDataException($"{path}: string offset {offset} outside the string table");
        int start = (int)offset;
        int end = Array.IndexOf(table, (byte)0, start);
        return Encoding.UTF8.GetString(table, start, (end < 0 ? table.Length : end) - start);
    }

    static ushort U16(byte[] b, int o) => BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(o));
    static uint U32(byte[] b, int o) => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(o));
    static ulong U64(byte[] b, int o) => BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(o));
}
