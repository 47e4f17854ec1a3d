using Microsoft.ML.Tokenizers;
using QLoraNet.Formats;

namespace QLoraNet.Models;

/// <summary>
/// Opens a SentencePiece <c>tokenizer.model</c> with Microsoft.ML.Tokenizers' <see cref="LlamaTokenizer"/>, bounded
/// and with one-line errors: a regular file of at most <see cref="MaxBytes"/>, and whatever the protobuf parser
/// throws on a damaged file becomes "not a SentencePiece model" naming the file.
/// </summary>
public static class SentencePieceFile
{
    /// <summary>Llama's tokenizer.model is 500 KB; the largest SentencePiece vocabularies are a few MB.</summary>
    public const long MaxBytes = 64L << 20;

    public static LlamaTokenizer Create(string path, bool addBos, bool addEos)
    {
        var bytes = UserFile.ReadBytes(path, MaxBytes, "tokenizer.model");
        try
        {
            using var stream = new MemoryStream(bytes, writable: false);
            return LlamaTokenizer.Create(stream, addBeginOfSentence: addBos, addEndOfSentence: addEos);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{path}: not a SentencePiece model ({SafeText.Clip(e.Message.Split('\n')[0], 120)})");
        }
    }
}
