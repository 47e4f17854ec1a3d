using System.Globalization;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The file-backed regions of this process's address space, from /proc/self/maps (Linux): used to check that a
/// pointer read out of native memory (a vtable, a function) lies in a library we expect before it is followed.
/// </summary>
public sealed class ProcessMemoryMap
{
    /// <summary>One mapped range [Start, End) of a file, with whether it is readable and executable.</summary>
    public readonly record struct Region(ulong Start, ulong End, bool Readable, bool Executable, string Path)
    {
        public bool Contains(ulong address, ulong bytes = 1) => address >= Start && bytes <= End - Start && address - Start <= End - Start - bytes;
    }

    public IReadOnlyList<Region> Regions { get; }

    ProcessMemoryMap(IReadOnlyList<Region> regions) => Regions = regions;

    /// <summary>This process's map now (empty where /proc/self/maps does not exist).</summary>
    public static ProcessMemoryMap Current() =>
        Parse(File.Exists("/proc/self/maps") ? File.ReadLines("/proc/self/maps") : []);

    /// <summary>Lines as the kernel writes them: "start-end perms offset dev inode path"; anonymous ones are skipped.</summary>
    public static ProcessMemoryMap Parse(IEnumerable<string> lines)
    {
        var regions = new List<Region>();
        foreach (var line in lines)
        {
            var f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 6 || !f[5].StartsWith('/')) continue;
            var range = f[0].Split('-');
            if (range.Length != 2 || f[1].Length < 3
                || !ulong.TryParse(range[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong start)
                || !ulong.TryParse(range[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong end) || end <= start) continue;
            string path = f[5].Trim();
            if (path.EndsWith(" (deleted)", StringComparison.Ordinal)) path = path[..^" (deleted)".Length];
            regions.Add(new Region(start, end, f[1][0] == 'r', f[1][2] == 'x', path));
        }
        return new ProcessMemoryMap(regions);
    }

    /// <summary>The mapped files named <paramref name="fileName"/> (distinct paths).</summary>
    public IReadOnlyList<string> PathsNamed(string fileName) =>
        Regions.Select(r => r.Path).Where(p => Path.GetFileName(p) == fileName).Distinct().ToList();

    /// <summary>The region holding <paramref name="bytes"/> bytes at <paramref name="address"/>, if one does.</summary>
    public Region? Find(ulong address, ulong bytes = 1) =>
        Regions.Where(r => r.Contains(address, bytes)).Select(r => (Region?)r).FirstOrDefault();
}
