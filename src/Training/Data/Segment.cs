namespace QLoraNet.Training.Data;

/// <summary>
/// A piece of a rendered example, tokenized on its own: its text, whether its tokens are trained (the response)
/// or masked (the prompt), and whether BOS/EOS ids go before/after it. BOS and EOS are ids, never the text
/// "&lt;s&gt;"/"&lt;/s&gt;" (SentencePiece would split those into ordinary pieces).
/// </summary>
public sealed record Segment(string Text, bool Trained, bool Bos = false, bool Eos = false);
