namespace QLoraNet.Training.Data;

/// <summary>
/// A piece of a rendered example: its text, whether its tokens are trained (the response) or masked (the prompt),
/// and whether BOS/EOS ids go before/after it. Templates that tokenize segments one by one (llama2-chat, alpaca, none)
/// flag BOS and EOS as ids; the whole-text templates (llama3, chatml, mistral-instruct, gemma) write special tokens as
/// text, which the tokenizer matches as added tokens, exactly as apply_chat_template does (see IChatTemplate).
/// </summary>
public sealed record Segment(string Text, bool Trained, bool Bos = false, bool Eos = false);
