using System.Globalization;
using System.Text.RegularExpressions;

namespace QLoraNet.Cli;

/// <summary>
/// Parses a shard size as transformers' save_pretrained(max_shard_size=...) does (convert_file_size_to_int):
/// decimal units KB/MB/GB = 10^3/10^6/10^9 bytes, binary units KiB/MiB/GiB = 2^10/2^20/2^30, a bare number = bytes.
/// </summary>
public static partial class ShardSize
{
    public static long Parse(string text)
    {
        var m = SizePattern().Match(text.Trim());
        if (!m.Success || !double.TryParse(m.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || value <= 0)
            throw new FormatException($"--max-shard-size '{text}' is not a size; write e.g. 5GB, 500MB or 2GiB");
        double unit = m.Groups[2].Value.ToUpperInvariant() switch
        {
            "" or "B" => 1,
            "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "KIB" => 1L << 10,
            "MIB" => 1L << 20,
            "GIB" => 1L << 30,
            var u => throw new FormatException($"--max-shard-size '{text}': unknown unit '{u}'; use KB, MB, GB, KiB, MiB or GiB"),
        };
        return (long)(value * unit);
    }

    [GeneratedRegex(@"^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$")]
    private static partial Regex SizePattern();
}
