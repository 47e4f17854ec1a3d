using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// The data of a run, ready for the trainer: read -> render with the template -> tokenize and mask -> truncate
/// -> shuffle (seed) -> split off validation -> pack -> per-epoch shuffled micro-batches.
/// Shuffles come from <see cref="Pcg32"/> streams of the seed: <see cref="SplitStream"/> orders the examples once
/// (before the val_fraction split and packing), and epoch e visits the train sequences in the permutation of
/// stream <see cref="EpochStream"/> + e, so a run resumed at (epoch, micro-batch) sees the same batches.
/// Validation (a file, or val_fraction of the shuffled examples) keeps its order.
/// </summary>
public sealed class TrainingData
{
    public const ulong SplitStream = 1;
    public const ulong EpochStream = 1000;

    readonly int seed;

    TrainingData(IReadOnlyList<PackedSequence> train, IReadOnlyList<PackedSequence> validation, DataStats stats, int padId, int seed)
    {
        Train = train;
        Validation = validation;
        Stats = stats;
        PadId = padId;
        this.seed = seed;
    }

    public IReadOnlyList<PackedSequence> Train { get; }
    public IReadOnlyList<PackedSequence> Validation { get; }
    public DataStats Stats { get; }
    public int PadId { get; }

    /// <summary>
    /// Builds the data; <paramref name="modelDir"/> is where the tokenizer config (and the chat template that
    /// data.template auto takes) lives; without it, auto means llama2-chat.
    /// </summary>
    public static TrainingData Build(DataConfig config, ITextTokenizer tokenizer, int seed, string? modelDir = null)
    {
        var chat = ResolveTemplate(config, tokenizer, modelDir);
        var encoder = new ExampleEncoder(tokenizer, config.MaxSeqLen, config.TrainOnInputs);
        var counts = new Counts();
        if (config.Format == DataFormat.Preference) return BuildPairs(config, chat, encoder, counts, tokenizer.PadId, seed);

        var train = Encode(config, chat, config.Train, encoder, counts);
        IReadOnlyList<TokenizedExample> validation = config.Validation != null ? Encode(config, chat, [config.Validation], encoder, counts) : [];
        var (shuffled, held) = Split(config, train, validation, seed);

        var trainSeq = SequencePacker.Pack(shuffled, config.MaxSeqLen, config.Packing);
        var valSeq = SequencePacker.Pack(held, config.MaxSeqLen, config.Packing);
        var stats = new DataStats(shuffled.Count, held.Count, trainSeq.Count, valSeq.Count,
            shuffled.Sum(e => (long)e.Length), shuffled.Sum(e => (long)e.TrainedTokens), config.MaxSeqLen,
            counts.Truncated, counts.Dropped, counts.Skipped, counts.FirstSkipReason);
        return new TrainingData(trainSeq, valSeq, stats, tokenizer.PadId, seed);
    }

    /// <summary>
    /// Preference data (<see cref="DataFormat.Preference"/>): each pair is one row, its chosen conversation then its
    /// rejected one, as two documents of a packed row (positions restart, and the block-causal mask keeps the two
    /// apart), so a micro-batch of rows is a micro-batch of pairs and shuffling, resuming and validation work on
    /// pairs unchanged. Only each conversation's final answer is trained (an earlier assistant turn of the prompt is
    /// context); the two conversations share the prompt's tokens. A pair of which either conversation keeps no
    /// answer token within data.max_seq_len is dropped.
    /// </summary>
    static TrainingData BuildPairs(DataConfig config, IChatTemplate? chat, ExampleEncoder encoder, Counts counts, int padId, int seed)
    {
        var train = EncodePairs(config, chat, config.Train, encoder, counts);
        IReadOnlyList<PackedSequence> validation = config.Validation != null ? EncodePairs(config, chat, [config.Validation], encoder, counts) : [];
        var (shuffled, held) = Split(config, train, validation, seed);
        var stats = new DataStats(shuffled.Count, held.Count, shuffled.Count, held.Count,
            shuffled.Sum(p => (long)p.Length), shuffled.Sum(p => (long)p.Labels.Count(l => l != TokenizedExample.IgnoreIndex)),
            config.MaxSeqLen, counts.Truncated, counts.Dropped, counts.Skipped, counts.FirstSkipReason) { Pairs = true };
        return new TrainingData(shuffled, held, stats, padId, seed);
    }

    /// <summary>The training items in the seed's order, with val_fraction of them split off as validation when the
    /// config asks (then <paramref name="validation"/>, the file's, is empty).</summary>
    static (IReadOnlyList<T> Train, IReadOnlyList<T> Validation) Split<T>(DataConfig config, IReadOnlyList<T> train, IReadOnlyList<T> validation, int seed)
    {
        var order = new Pcg32((ulong)seed, SplitStream).Permutation(train.Count);
        var shuffled = order.Select(i => train[i]).ToArray();
        if (config.ValFraction <= 0) return (shuffled, validation);
        if (shuffled.Length < 2)
            throw new InvalidDataException($"data.val_fraction needs at least 2 examples; {string.Join(", ", config.Train)} gave {shuffled.Length}");
        int nVal = Math.Clamp((int)Math.Round(config.ValFraction * shuffled.Length), 1, shuffled.Length - 1);
        return (shuffled[nVal..], shuffled[..nVal]);
    }

    /// <summary>
    /// The examples of <paramref name="files"/> as validation data (in file order, rendered, masked, truncated and
    /// packed exactly as a run's <c>data.validation</c>; preference pairs one per row), with no training split: what
    /// `eval --data` scores, so its loss equals the validation loss a run reports on the same file.
    /// </summary>
    public static TrainingData ForEvaluation(DataConfig config, ITextTokenizer tokenizer, IReadOnlyList<string> files, string? modelDir = null)
    {
        var chat = ResolveTemplate(config, tokenizer, modelDir);
        var encoder = new ExampleEncoder(tokenizer, config.MaxSeqLen, config.TrainOnInputs);
        var counts = new Counts();
        if (config.Format == DataFormat.Preference)
        {
            var pairs = EncodePairs(config, chat, files, encoder, counts);
            return new TrainingData([], pairs, new DataStats(0, pairs.Count, 0, pairs.Count, 0, 0, config.MaxSeqLen,
                counts.Truncated, counts.Dropped, counts.Skipped, counts.FirstSkipReason) { Pairs = true }, tokenizer.PadId, 0);
        }
        var examples = Encode(config, chat, files, encoder, counts);
        var sequences = SequencePacker.Pack(examples, config.MaxSeqLen, config.Packing);
        var stats = new DataStats(0, examples.Count, 0, sequences.Count, 0, 0, config.MaxSeqLen,
            counts.Truncated, counts.Dropped, counts.Skipped, counts.FirstSkipReason);
        return new TrainingData([], sequences, stats, tokenizer.PadId, 0);
    }

    /// <summary>The chat template rows are rendered with (null for completion rows); auto reads the model's tokenizer config.</summary>
    static IChatTemplate? ResolveTemplate(DataConfig config, ITextTokenizer tokenizer, string? modelDir)
    {
        if (config.Format == DataFormat.Chat && config.Template == TemplateKind.Alpaca)
            throw new InvalidDataException($"data.template 'alpaca' renders instruction rows only; use one of {string.Join(", ", ChatTemplates.ChatKinds.Select(k => YamlNames.Of(k)))} or auto with data.format chat");
        return config.Format == DataFormat.Completion ? null
            : ChatTemplates.Resolve(config.Template, tokenizer, modelDir != null ? TokenizerConfigJson.Load(modelDir) : TokenizerConfigJson.Empty);
    }

    public int MicroBatchesPerEpoch(int microBatchSize) => (Train.Count + microBatchSize - 1) / microBatchSize;

    /// <summary>
    /// The micro-batches of epoch <paramref name="epoch"/> (0-based) in order, starting after the first
    /// <paramref name="skip"/> (to resume). The last one may be smaller.
    /// </summary>
    public IEnumerable<Batch> TrainBatches(int epoch, int microBatchSize, int skip = 0)
    {
        var perm = new Pcg32((ulong)seed, EpochStream + (ulong)epoch).Permutation(Train.Count);
        for (int start = skip * microBatchSize; start < perm.Length; start += microBatchSize)
            yield return Batch.Collate(perm[start..Math.Min(start + microBatchSize, perm.Length)].Select(i => Train[i]).ToArray(), PadId);
    }

    public IEnumerable<Batch> ValidationBatches(int microBatchSize)
    {
        for (int start = 0; start < Validation.Count; start += microBatchSize)
            yield return Batch.Collate(Validation.Skip(start).Take(microBatchSize).ToArray(), PadId);
    }

    /// <summary>The rows of <paramref name="files"/>; bad ones skipped and counted when the config says so.</summary>
    static IReadOnlyList<RawExample> Read(DataConfig config, IReadOnlyList<string> files, Counts counts)
    {
        var read = ExampleFiles.Read(files, config.Format, config.Columns, config.SkipBadRows);
        counts.Skipped += read.SkippedRows;
        counts.FirstSkipReason ??= read.FirstSkipReason;
        if (read.Examples.Count == 0)
            throw new InvalidDataException(read.SkippedRows > 0
                ? $"{string.Join(", ", files)}: every row was bad and skipped ({read.SkippedRows}); the first: {read.FirstSkipReason}"
                : $"{string.Join(", ", files)}: no examples (the file is empty)");
        return read.Examples;
    }

    static List<TokenizedExample> Encode(DataConfig config, IChatTemplate? chat, IReadOnlyList<string> files, ExampleEncoder encoder, Counts counts)
    {
        string names = string.Join(", ", files);
        var read = Read(config, files, counts);
        var result = new List<TokenizedExample>(read.Count);
        foreach (var raw in read)
        {
            var rendered = PromptTemplates.Render(raw, chat, config.SystemPrompt, config.SystemRole);
            var (example, outcome) = encoder.Encode(rendered);
            if (outcome == ExampleEncoder.Outcome.Truncated) counts.Truncated++;
            if (example == null)
            {
                counts.Dropped++;
                continue;
            }
            result.Add(example);
        }
        if (result.Count == 0)
            throw new InvalidDataException($"{names}: all {read.Count} examples were dropped: none has a response token within data.max_seq_len={config.MaxSeqLen} tokens; raise max_seq_len");
        return result;
    }

    static List<PackedSequence> EncodePairs(DataConfig config, IChatTemplate? chat, IReadOnlyList<string> files, ExampleEncoder encoder, Counts counts)
    {
        var read = Read(config, files, counts);
        var result = new List<PackedSequence>(read.Count);
        foreach (var raw in read.Cast<PreferenceExample>())
        {
            var chosen = EncodeAnswer(config, chat, raw.With(raw.Chosen), encoder, counts);
            var rejected = EncodeAnswer(config, chat, raw.With(raw.Rejected), encoder, counts);
            if (chosen is null || rejected is null)
            {
                counts.Dropped++;
                continue;
            }
            result.Add(PackedSequence.Of([chosen, rejected]));
        }
        if (result.Count == 0)
            throw new InvalidDataException($"{string.Join(", ", files)}: all {read.Count} pairs were dropped: in none do both answers keep a token within data.max_seq_len={config.MaxSeqLen}; raise max_seq_len");
        return result;
    }

    /// <summary>One conversation of a pair, with only its final answer trained (null when none of it survives truncation).</summary>
    static TokenizedExample? EncodeAnswer(DataConfig config, IChatTemplate? chat, ChatExample conversation, ExampleEncoder encoder, Counts counts)
    {
        var (example, outcome) = encoder.Encode(PromptTemplates.Render(conversation, chat, config.SystemPrompt, config.SystemRole));
        if (outcome == ExampleEncoder.Outcome.Truncated) counts.Truncated++;
        if (example is null) return null;
        var labels = example.Labels.ToArray();
        int end = Array.FindLastIndex(labels, l => l != TokenizedExample.IgnoreIndex);
        int start = end;
        while (start > 0 && labels[start - 1] != TokenizedExample.IgnoreIndex) start--;
        for (int i = 0; i < start; i++) labels[i] = TokenizedExample.IgnoreIndex;   // earlier answers are context
        return example with { Labels = labels };
    }

    sealed class Counts
    {
        public int Truncated, Dropped, Skipped;
        public string? FirstSkipReason;
    }
}
