namespace QLoraNet.Formats;

/// <summary>
/// The special token ids config.json names: <see cref="Bos"/> starts a sequence, any of <see cref="Eos"/> ends
/// generation (Llama 3 lists several), <see cref="Pad"/> is null when the model has none (Llama 2).
/// </summary>
public sealed record SpecialTokenIds(int Bos, IReadOnlyList<int> Eos, int? Pad);
