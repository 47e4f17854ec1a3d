namespace QLoraNet.Models;

/// <summary>
/// Picks the tokenizer of a model directory by the file it ships: a SentencePiece tokenizer.model today. A family
/// whose checkpoints ship a Hugging Face tokenizer.json adds its reader here (one line) and implements
/// <see cref="ITextTokenizer"/> beside <see cref="SentencePieceTextTokenizer"/>.
/// </summary>
public static class TextTokenizers
{
    public static ITextTokenizer Load(string modelDir) => SentencePieceTextTokenizer.Load(modelDir);
}
