using System.Buffers;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Unicode;

namespace QLoraNet.Formats;

/// <summary>
/// Reads a file the user handed us (a config, a dataset, a model's JSON) with limits checked before anything is
/// allocated for it: it must be a regular file (a FIFO would block the open forever and <c>/dev/zero</c> never ends),
/// no larger than the caller's cap, valid UTF-8 where text is expected, JSON no deeper than <see cref="MaxJsonDepth"/>
/// and without duplicate keys, lines no longer than the caller's cap. Every failure is an
/// <see cref="InvalidDataException"/> (or <see cref="FileNotFoundException"/>) of one line naming the file and,
/// where there is one, the line.
/// </summary>
public static class UserFile
{
    /// <summary>Cap for the small JSON files of a model or adapter directory (config.json is ~1 KB, an index ~100 KB).</summary>
    public const long MaxJsonBytes = 16L << 20;

    /// <summary>Nesting deeper than this is refused: no config or index needs more than a handful of levels.</summary>
    public const int MaxJsonDepth = 64;

    /// <summary>Refuses a missing path, a directory, or anything that is not a regular file (after following links).</summary>
    public static void RequireRegular(string path, string what = "file")
    {
        if (Directory.Exists(path)) throw new InvalidDataException($"{path}: is a directory; give a {what}");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: {what} not found", path);
        if (FileType(path) is { } type && type != RegularFile)
            throw new InvalidDataException($"{path}: not a regular file ({Describe(type)}); give a {what} on disk");
    }

    /// <summary>A read-only stream over a regular file (see <see cref="RequireRegular"/>).</summary>
    public static FileStream OpenRead(string path, string what = "file", int bufferSize = 1 << 16)
    {
        RequireRegular(path, what);
        return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize);
    }

    /// <summary>All bytes of a regular file of at most <paramref name="maxBytes"/>.</summary>
    public static byte[] ReadBytes(string path, long maxBytes, string what = "file")
    {
        using var stream = OpenRead(path, what);
        long length = stream.Length;
        if (length > maxBytes)
            throw new InvalidDataException($"{path}: {length} bytes is more than the {maxBytes}-byte limit for a {what}");
        var bytes = new byte[length];
        stream.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>A UTF-8 text file of at most <paramref name="maxBytes"/>; invalid UTF-8 is refused naming its line.</summary>
    public static string ReadText(string path, long maxBytes, string what = "file")
    {
        var bytes = ReadBytes(path, maxBytes, what);
        RequireUtf8(bytes, path);
        int bom = bytes.AsSpan().StartsWith(Encoding.UTF8.Preamble) ? 3 : 0;
        return Encoding.UTF8.GetString(bytes, bom, bytes.Length - bom);
    }

    /// <summary>A JSON file parsed with the limits of this class; the caller disposes the document.</summary>
    public static JsonDocument ReadJson(string path, long maxBytes = MaxJsonBytes, string what = "JSON file") =>
        ParseJson(ReadBytes(path, maxBytes, what), path);

    /// <summary>Like <see cref="ReadJson"/>, as a mutable <see cref="JsonNode"/> tree.</summary>
    public static JsonNode? ReadJsonNode(string path, long maxBytes = MaxJsonBytes, string what = "JSON file")
    {
        var bytes = ReadBytes(path, maxBytes, what);
        RequireUtf8(bytes, path);
        try
        {
            return JsonNode.Parse(bytes, documentOptions: JsonOptions);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}:{(e.LineNumber ?? 0) + 1}: not valid JSON ({Reason(e)})");
        }
    }

    /// <summary>JSON bytes from <paramref name="source"/> (named in errors) with the limits of this class.</summary>
    public static JsonDocument ParseJson(ReadOnlyMemory<byte> bytes, string source)
    {
        RequireUtf8(bytes.Span, source);
        try
        {
            return JsonDocument.Parse(bytes, JsonOptions);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}:{(e.LineNumber ?? 0) + 1}: not valid JSON ({Reason(e)})");
        }
    }

    /// <summary>Duplicate keys are refused: which of two values counts differs between readers (last wins in Python).</summary>
    public static readonly JsonDocumentOptions JsonOptions = new() { MaxDepth = MaxJsonDepth, AllowDuplicateProperties = false };

    /// <summary>
    /// The lines of a UTF-8 text file, numbered from 1, read as a stream of bytes: a line longer than
    /// <paramref name="maxLineBytes"/> (one endless line, binary data) fails when the limit is passed, so memory stays
    /// bounded whatever the file holds. "\n", "\r\n" and "\r" end lines; a line that is not UTF-8 is refused by number.
    /// </summary>
    public static IEnumerable<(int Line, string Text)> ReadLines(string path, int maxLineBytes, string what = "file")
    {
        using var stream = OpenRead(path, what);
        var line = new MemoryStream();
        var buffer = new byte[1 << 16];
        var strict = new UTF8Encoding(false, throwOnInvalidBytes: true);
        int number = 1;
        bool pendingCr = false, first = true;
        int n;
        while ((n = stream.Read(buffer, 0, buffer.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < n; i++)
            {
                byte b = buffer[i];
                if (pendingCr)
                {
                    pendingCr = false;
                    if (b == (byte)'\n') { start = i + 1; continue; }
                }
                if (b is not ((byte)'\n' or (byte)'\r')) continue;
                line.Write(buffer, start, i - start);
                start = i + 1;
                if (line.Length > maxLineBytes) throw LineTooLong(path, number, maxLineBytes);
                yield return (number++, Decode(line, strict, path, number - 1, ref first));
                line.SetLength(0);
                pendingCr = b == (byte)'\r';
            }
            line.Write(buffer, start, n - start);
            if (line.Length > maxLineBytes) throw LineTooLong(path, number, maxLineBytes);
        }
        if (line.Length > 0) yield return (number, Decode(line, strict, path, number, ref first));
    }

    /// <summary>Whether a regular file's last byte ends a line: a file appended to line by line that does not was cut
    /// off by a kill during an append (its last line is partial). False for an empty file.</summary>
    public static bool EndsWithNewline(string path, string what = "file")
    {
        using var stream = OpenRead(path, what, bufferSize: 1);
        if (stream.Length == 0) return false;
        stream.Seek(-1, SeekOrigin.End);
        return stream.ReadByte() is '\n' or '\r';
    }

    static InvalidDataException LineTooLong(string path, int line, int max) =>
        new($"{path}:{line}: line longer than {max} bytes (a binary file, or records not separated by newlines?)");

    static string Decode(MemoryStream line, UTF8Encoding strict, string path, int number, ref bool first)
    {
        var bytes = line.GetBuffer().AsSpan(0, (int)line.Length);
        if (first && bytes.StartsWith(Encoding.UTF8.Preamble)) bytes = bytes[3..];
        first = false;
        try { return strict.GetString(bytes); }
        catch (DecoderFallbackException) { throw new InvalidDataException($"{path}:{number}: not valid UTF-8 text"); }
    }

    /// <summary>Refuses bytes that are not UTF-8, naming the line (1-based) of the first bad sequence.</summary>
    public static void RequireUtf8(ReadOnlySpan<byte> bytes, string source)
    {
        if (Utf8.IsValid(bytes)) return;
        var chars = ArrayPool<char>.Shared.Rent(4096);
        try
        {
            int offset = 0;
            while (offset < bytes.Length)
            {
                var status = Utf8.ToUtf16(bytes[offset..], chars, out int read, out _, replaceInvalidSequences: false);
                offset += read;
                if (status is System.Buffers.OperationStatus.InvalidData or System.Buffers.OperationStatus.NeedMoreData) break;
            }
            int line = 1 + bytes[..Math.Min(offset, bytes.Length)].Count((byte)'\n');
            throw new InvalidDataException($"{source}:{line}: not valid UTF-8 text (byte {offset})");
        }
        finally
        {
            ArrayPool<char>.Shared.Return(chars);
        }
    }

    /// <summary>System.Text.Json's reason without its "Path: $ | LineNumber: ..." tail, which the caller prints its own way.</summary>
    static string Reason(JsonException e)
    {
        string m = e.Message;
        int cut = m.IndexOf(" Path: ", StringComparison.Ordinal);
        if (cut < 0) cut = m.IndexOf(" LineNumber: ", StringComparison.Ordinal);
        m = (cut >= 0 ? m[..cut] : m).Trim().TrimEnd('.');
        return SafeText.Clip(m, 160);
    }

    // ---- file type (POSIX st_mode) ----

    const int TypeMask = 0xF000, Fifo = 0x1000, CharDevice = 0x2000, DirectoryType = 0x4000, BlockDevice = 0x6000,
        RegularFile = 0x8000, Socket = 0xC000;

    static string Describe(int type) => type switch
    {
        Fifo => "a FIFO (named pipe)",
        CharDevice => "a character device",
        BlockDevice => "a block device",
        DirectoryType => "a directory",
        Socket => "a socket",
        _ => $"file type 0x{type:X4}",
    };

    /// <summary>
    /// The POSIX file type of <paramref name="path"/> (following links), or null where it cannot be told (Windows,
    /// which has no FIFOs or devices in the file system). .NET exposes no file type, so this asks the runtime's own
    /// native shim (System.Native's SystemNative_Stat, what FileInfo uses): its FileStatus struct is the runtime's,
    /// the same on every Unix, with the mode as the second int32 and the S_IF* values above.
    /// </summary>
    static int? FileType(string path)
    {
        if (OperatingSystem.IsWindows()) return null;
        try
        {
            Span<byte> status = stackalloc byte[256];
            unsafe
            {
                fixed (byte* p = status)
                    if (SystemNativeStat(path, p) != 0) return null;
            }
            return BitConverter.ToInt32(status[4..8]) & TypeMask;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    [DllImport("libSystem.Native", EntryPoint = "SystemNative_Stat", CharSet = CharSet.Ansi, SetLastError = true)]
    static extern unsafe int SystemNativeStat([MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte* output);
}
