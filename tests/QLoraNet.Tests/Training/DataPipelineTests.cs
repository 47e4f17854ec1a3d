using QLoraNet.Models;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

[Trait("tier", "unit")]
public sealed class DataPipelineTests : IDisposable
{
    readonly TempDir dir = Paths.Temp();
    static ITextTokenizer Tok => TokenizerAndTemplateTests.Tok;
    const int I = TokenizedExample.IgnoreIndex;

    public void Dispose() => dir.Dispose();

    string Write(string name, string text)
    {
        File.WriteAllText(dir[name], text);
        return dir[name];
    }

    static DataConfig Config(string train, DataFormat format = DataFormat.Instruction, int maxSeqLen = 512,
        bool packing = false, bool skipBadRows = false, double valFraction = 0, string? validation = null,
        TemplateKind template = TemplateKind.Llama2Chat, ColumnMapping? columns = null) =>
        new([train], validation, valFraction, format, template, null, maxSeqLen, packing, false, skipBadRows, columns ?? new ColumnMapping());

    string InstructionRows(int n) => Write("i.jsonl", string.Concat(Enumerable.Range(0, n).Select(i =>
        $"{{\"instruction\": \"What is {i} plus one?\", \"output\": \"{i + 1}\"}}\n")));

    static TokenizedExample Ex(int length, int first) =>
        new(Enumerable.Range(first, length).ToArray(), Enumerable.Range(first, length).Select((v, i) => i == 0 ? I : v).ToArray());

    [Fact]
    public void Packing_is_first_fit_with_restarting_positions_and_document_ids()
    {
        var seqs = SequencePacker.Pack([Ex(6, 100), Ex(5, 200), Ex(3, 300), Ex(2, 400)], maxSeqLen: 9, packing: true);
        // 6 -> bin 0; 5 does not fit bin 0 (11) -> bin 1; 3 fits bin 0 (9); 2 fits bin 1 (7).
        Assert.Equal(2, seqs.Count);
        Assert.Equal(new[] { 0, 1, 2, 3, 4, 5, 0, 1, 2 }, seqs[0].PositionIds);
        Assert.Equal(new[] { 1, 1, 1, 1, 1, 1, 2, 2, 2 }, seqs[0].DocumentIds);
        Assert.Equal(new[] { 200, 201, 202, 203, 204, 400, 401 }, seqs[1].InputIds);
        Assert.Equal(new[] { I, 201, 202, 203, 204, I, 401 }, seqs[1].Labels);
        Assert.Equal(4, SequencePacker.Pack([Ex(6, 100), Ex(5, 200), Ex(3, 300), Ex(2, 400)], 9, packing: false).Count);
    }

    [Fact]
    public void Attention_mask_is_block_diagonal_causal_and_padding_sees_only_padding()
    {
        var packed = SequencePacker.Pack([Ex(2, 10), Ex(2, 20)], 8, true);
        var single = SequencePacker.Pack([Ex(3, 30)], 8, false);
        var batch = Batch.Collate([packed[0], single[0]], padId: 0);
        Assert.Equal((2, 4), (batch.Rows, batch.Length));
        Assert.Equal(new long[] { 10, 11, 20, 21, 30, 31, 32, 0 }, batch.InputIds);
        Assert.Equal(new long[] { I, 11, I, 21, I, 31, 32, I }, batch.Labels);
        Assert.Equal(new long[] { 0, 1, 0, 1, 0, 1, 2, 0 }, batch.PositionIds);
        Assert.True(batch.IsPacked);

        using var t = batch.ToTensors(CPU);
        Assert.Equal(new long[] { 2, 4 }, t.InputIds.shape);
        Assert.NotNull(t.AttentionMask);   // packed rows carry their block-causal mask
        Assert.Equal(new long[] { 2, 1, 4, 4 }, t.AttentionMask.shape);
        Assert.Equal(ScalarType.Bool, t.AttentionMask.dtype);
        Assert.Equal(ScalarType.Int64, t.Labels.dtype);
        Assert.Equal(2L, t.PositionIds[1, 2].item<long>());
        var m = t.AttentionMask.data<bool>().ToArray();
        string Row(int b, int i) => string.Concat(Enumerable.Range(0, 4).Select(j => m[(b * 4 + i) * 4 + j] ? '1' : '0'));
        Assert.Equal(new[] { "1000", "1100", "0010", "0011" }, Enumerable.Range(0, 4).Select(i => Row(0, i)));
        Assert.Equal(new[] { "1000", "1100", "1110", "0001" }, Enumerable.Range(0, 4).Select(i => Row(1, i)));
        Assert.False(t.AttentionMask[0, 0, 2, 1].item<bool>());
    }

    [Fact]
    public void Pcg32_matches_the_reference_generator()
    {
        // pcg32-demo (pcg-random.org, pcg32_srandom_r(&rng, 42, 54)) prints these first outputs.
        var rng = new Pcg32(42, 54);
        Assert.Equal(new uint[] { 0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e },
            Enumerable.Range(0, 6).Select(_ => rng.NextUInt()));
        var p = new Pcg32(7, 0).Permutation(50);
        Assert.Equal(Enumerable.Range(0, 50), p.Order());
    }

    [Fact]
    public void Shuffle_is_deterministic_per_seed_and_epoch_and_resumable()
    {
        var cfg = Config(InstructionRows(20));
        var a = TrainingData.Build(cfg, Tok, seed: 3);
        var b = TrainingData.Build(cfg, Tok, seed: 3);
        var c = TrainingData.Build(cfg, Tok, seed: 4);
        string Epoch(TrainingData d, int e, int skip = 0) =>
            string.Join("|", d.TrainBatches(e, 3, skip).Select(x => string.Join(",", x.InputIds)));
        Assert.Equal(Epoch(a, 0), Epoch(b, 0));
        Assert.NotEqual(Epoch(a, 0), Epoch(a, 1));
        Assert.NotEqual(Epoch(a, 0), Epoch(c, 0));
        Assert.EndsWith(Epoch(a, 1, skip: 2), Epoch(a, 1));
        Assert.Equal(7, a.MicroBatchesPerEpoch(3));
        Assert.Equal(5, a.TrainBatches(0, 3, skip: 2).Count());
        Assert.Equal(20, a.TrainBatches(0, 3).Sum(x => x.Rows));
    }

    [Fact]
    public void Val_fraction_splits_shuffled_examples_disjointly()
    {
        var d = TrainingData.Build(Config(InstructionRows(20), valFraction: 0.25), Tok, seed: 1);
        Assert.Equal((15, 5), (d.Stats.TrainExamples, d.Stats.ValidationExamples));
        var train = d.Train.Select(s => string.Join(",", s.InputIds)).ToHashSet();
        Assert.DoesNotContain(d.Validation, v => train.Contains(string.Join(",", v.InputIds)));
        Assert.Equal(5, d.ValidationBatches(2).Sum(b => b.Rows));
    }

    [Fact]
    public void Packing_reduces_sequences_and_keeps_every_example()
    {
        var d = TrainingData.Build(Config(InstructionRows(20), maxSeqLen: 128, packing: true), Tok, 0);
        Assert.True(d.Train.Count < 20);
        Assert.Equal(20, d.Train.Sum(s => s.Documents));
        Assert.All(d.Train, s => Assert.True(s.Length <= 128));
        Assert.Contains("train: 20 examples in", d.Stats.Describe());
    }

    [Fact]
    public void Truncated_and_dropped_examples_are_counted_and_all_dropped_is_an_error()
    {
        string f = Write("c.jsonl", "{\"instruction\": \"Hi\", \"output\": \"Hello there, how are you today?\"}\n"
            + "{\"instruction\": \"" + string.Join(" ", Enumerable.Repeat("word", 40)) + "\", \"output\": \"ok\"}\n");
        var d = TrainingData.Build(Config(f, maxSeqLen: 14), Tok, 0);
        Assert.Equal((1, 1, 1), (d.Stats.Truncated, d.Stats.Dropped, d.Stats.TrainExamples));
        Assert.Equal(14, d.Train[0].Length);
        var e = Assert.Throws<InvalidDataException>(() => TrainingData.Build(Config(f, maxSeqLen: 8), Tok, 0));
        Assert.Contains("all 2 examples were dropped", e.Message);
        Assert.Contains("max_seq_len=8", e.Message);
    }

    [Fact]
    public void Bad_jsonl_line_names_file_and_line_unless_skipped()
    {
        string f = Write("bad.jsonl", "{\"text\": \"one\"}\n\n{\"text\": oops}\n{\"text\": \"four\"}\n[1]\n");
        var e = Assert.Throws<InvalidDataException>(() => TrainingData.Build(Config(f, DataFormat.Completion), Tok, 0));
        Assert.StartsWith($"{f}:3: not valid JSON", e.Message);
        Assert.Contains("skip_bad_rows", e.Message);
        var d = TrainingData.Build(Config(f, DataFormat.Completion, skipBadRows: true), Tok, 0);
        Assert.Equal((2, 2), (d.Stats.SkippedRows, d.Stats.TrainExamples));
        Assert.StartsWith($"{f}:3:", d.Stats.FirstSkipReason);
    }

    [Fact]
    public void Missing_field_and_bad_chat_order_name_the_row()
    {
        string f = Write("m.jsonl", "{\"instruction\": \"x\", \"response\": \"y\"}\n");
        var e = Assert.Throws<InvalidDataException>(() => TrainingData.Build(Config(f), Tok, 0));
        Assert.StartsWith($"{f}:1: missing or empty field 'output' (text); the row has: instruction, response", e.Message);
        string chat = Write("o.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n");
        e = Assert.Throws<InvalidDataException>(() => TrainingData.Build(Config(chat, DataFormat.Chat), Tok, 0));
        Assert.Contains($"{chat}:1: the conversation ends with a user message", e.Message);
    }

    [Fact]
    public void Chat_jsonl_reads_system_and_turns()
    {
        string f = Write("chat.jsonl", "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}]}\n");
        var d = TrainingData.Build(Config(f, DataFormat.Chat), Tok, 0);
        var expected = Tok.Encode("[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST] Hello ", true, true);
        Assert.Equal(expected, d.Train[0].InputIds);
    }

    [Fact]
    public void Csv_reads_mapped_columns_and_reports_missing_ones()
    {
        string f = Write("t.csv", "question,context,answer\n\"What is 1+1?\",,\"2, of course\"\n\"Multi\nline\",ctx,yes\n");
        var map = new ColumnMapping(Instruction: "question", Input: "context", Output: "answer");
        var d = TrainingData.Build(Config(f, columns: map, template: TemplateKind.None), Tok, 0);
        Assert.Equal(2, d.Stats.TrainExamples);
        var texts = d.Train.Select(s => Tok.Decode(s.InputIds)).ToArray();
        Assert.Contains(texts, t => t.Contains("2, of course"));
        var e = Assert.Throws<InvalidDataException>(() => TrainingData.Build(Config(f), Tok, 0));
        Assert.Equal($"{f}: missing column(s) instruction, output; the header has: question, context, answer (map names with data.columns)", e.Message);
    }

    [Fact]
    public void Unclosed_csv_quote_is_a_one_line_error_naming_file_and_line()
    {
        // CsvHelper reads an unclosed quote to the end of the file as one cell, so the row lacks its output.
        string f = Write("bad.csv", "instruction,output\n\"open quote,never closed\n");
        var e = Assert.Throws<InvalidDataException>(() => TrainingData.Build(Config(f), Tok, 0));
        Assert.StartsWith($"{f}:2: missing or empty field 'output'", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Empty_dataset_is_an_error()
    {
        string f = Write("empty.jsonl", "\n\n");
        var e = Assert.Throws<InvalidDataException>(() => TrainingData.Build(Config(f), Tok, 0));
        Assert.Equal($"{f}: no examples (the file is empty)", e.Message);
    }
}
