using System.Text.Json;

namespace QLoraNet.Formats;

/// <summary>
/// Reads a JSON file that a user or a model download supplies (tokenizer.json, tokenizer_config.json) within a size
/// and nesting bound, so that no input allocates without bound or recurses deeply: a larger file or deeper nesting is
/// one error naming the file. The one place the tokenizer files are read from disk.
/// </summary>
public static class BoundedJson
{
    /// <summary>Nesting the tokenizer files never exceed (they nest 5-6 levels); JSON deeper than this is refused.</summary>
    public const int MaxDepth = 64;

    /// <summary>The parsed document; the caller disposes it.</summary>
    public static JsonDocument Read(string path, long maxBytes, string what)
    {
        byte[] bytes = ReadBytes(path, maxBytes, what);
        // Invalid UTF-8 found now, naming the line; left to the parser it surfaces later, from a string read, as
        // "Cannot transcode invalid UTF-8 JSON text" naming nothing (issue 11).
        UserFile.RequireUtf8(bytes, path);
        try
        {
            return JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = MaxDepth, AllowTrailingCommas = false });
        }
        catch (JsonException e)
        {
            // The parser quotes the offending input: escaped and clipped, so the error stays one printable line.
            throw new InvalidDataException($"{path}:{(e.LineNumber ?? 0) + 1}: not valid JSON ({SafeText.Clip(FirstSentence(e.Message), 160)}); the {what} must be the file as Hugging Face writes it");
        }
    }

    /// <summary>The bytes of a file of at most <paramref name="maxBytes"/>, or one error naming it.</summary>
    public static byte[] ReadBytes(string path, long maxBytes, string what)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not found ({what})", path);
        // A FIFO would block the open until a writer comes, /dev/zero never ends: regular files only (issue 11).
        UserFile.RequireRegular(path, what);
        using var stream = File.OpenRead(path);
        if (stream.CanSeek && stream.Length > maxBytes)
            throw new InvalidDataException($"{path}: {stream.Length:N0} bytes is more than a {what} can be ({maxBytes:N0}); is it the right file?");
        // Read at most maxBytes + 1 (a pipe has no length to check first).
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int n;
        while ((n = stream.Read(chunk, 0, (int)Math.Min(chunk.Length, maxBytes + 1 - buffer.Length))) > 0)
        {
            buffer.Write(chunk, 0, n);
            if (buffer.Length > maxBytes)
                throw new InvalidDataException($"{path}: more than {maxBytes:N0} bytes, more than a {what} can be; is it the right file?");
        }
        return buffer.ToArray();
    }

    static string FirstSentence(string message)
    {
        int dot = message.IndexOf(". ", StringComparison.Ordinal);
        return dot > 0 ? message[..dot] : message.TrimEnd('.');
    }
}
