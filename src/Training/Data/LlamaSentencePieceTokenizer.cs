using Microsoft.ML.Tokenizers;

namespace QLoraNet.Training.Data;

/// <summary>
/// <see cref="ITokenizer"/> over Microsoft.ML.Tokenizers' <see cref="LlamaTokenizer"/> reading a Llama-2
/// SentencePiece <c>tokenizer.model</c> (<c>"Hello world!"</c> -> 1, 15043, 3186, 29991 with BOS, as SentencePiece).
/// Every call encodes its text as a fresh SentencePiece input, so the dummy-prefix space is added at its start;
/// the prompt templates rely on that (see <see cref="Llama2ChatTemplate"/>). Llama-2 has no pad token: padding
/// uses &lt;unk&gt; (id 0), as is usual for Llama-2 fine-tuning; padded positions are masked everywhere anyway.
/// </summary>
public sealed class LlamaSentencePieceTokenizer : ITokenizer
{
    readonly LlamaTokenizer inner;

    LlamaSentencePieceTokenizer(LlamaTokenizer inner) => this.inner = inner;

    /// <summary>Loads <c>tokenizer.model</c> from a model directory, or from the file itself.</summary>
    public static LlamaSentencePieceTokenizer Load(string modelDirOrFile)
    {
        string file = Directory.Exists(modelDirOrFile) ? Path.Combine(modelDirOrFile, "tokenizer.model") : modelDirOrFile;
        if (!File.Exists(file)) throw new FileNotFoundException($"tokenizer file '{file}' not found; a Llama model directory holds tokenizer.model", file);
        return new LlamaSentencePieceTokenizer(QLoraNet.Models.SentencePieceFile.Create(file, addBos: false, addEos: false));
    }

    public IReadOnlyList<int> Encode(string text, bool addBos, bool addEos) =>
        inner.EncodeToIds(text, addBos, addEos, considerPreTokenization: true, considerNormalization: true);

    public string Decode(IEnumerable<int> ids) => inner.Decode(ids.Where(i => i != BosId && i != EosId && i != PadId));

    public int BosId => inner.BeginningOfSentenceId;
    public int EosId => inner.EndOfSentenceId;
    public int PadId => inner.UnknownId;
    public int VocabSize => inner.Vocabulary.Count;
}
