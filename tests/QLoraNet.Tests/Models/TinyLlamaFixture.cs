using System.Text.Json;
using QLoraNet.Models;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>The tiny real Llama loaded once per test class (fp32 compute on CPU, as the reference was computed),
/// with its tokenizer and the Hugging Face reference outputs of models/tiny-llama-sotu/reference.json.</summary>
public sealed class TinyLlamaFixture : IDisposable
{
    public LlamaForCausalLM Model { get; }
    public ITextTokenizer Tokenizer { get; }
    public IReadOnlyList<ReferenceCase> Cases { get; }
    public long[] HeldoutIds { get; }
    public double HeldoutMeanLoss { get; }

    public TinyLlamaFixture()
    {
        Model = Load();
        Tokenizer = TextTokenizers.Load(Paths.TinyModel);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Paths.TinyModel, "reference.json")));
        var root = doc.RootElement;
        Cases = root.GetProperty("cases").EnumerateArray().Select(c => new ReferenceCase(
            c.GetProperty("prompt").GetString()!,
            Ints(c.GetProperty("input_ids")),
            Ints(c.GetProperty("last_logits_top5")),
            Doubles(c.GetProperty("last_logits_top5_values")),
            Doubles(c.GetProperty("logits_first8_last_position")),
            Doubles(c.GetProperty("logits_sum_per_position")),
            Ints(c.GetProperty("greedy_24")),
            c.GetProperty("greedy_text").GetString()!)).ToList();
        HeldoutIds = Ints(root.GetProperty("heldout_text_first_512_ids")).Select(i => (long)i).ToArray();
        HeldoutMeanLoss = root.GetProperty("heldout_mean_loss_fp32").GetDouble();
    }

    public static LlamaForCausalLM Load() =>
        LlamaLoader.Load(Paths.TinyModel, new LoadOptions(CPU, ScalarType.Float32, (_, w) => new DenseFrozenLinear(w, ScalarType.Float32)));

    static int[] Ints(JsonElement a) => a.EnumerateArray().Select(x => x.GetInt32()).ToArray();
    static double[] Doubles(JsonElement a) => a.EnumerateArray().Select(x => x.GetDouble()).ToArray();

    public void Dispose() => Model.Dispose();
}

public sealed record ReferenceCase(string Prompt, int[] InputIds, int[] Top5Ids, double[] Top5Values, double[] First8Logits,
    double[] LogitSumPerPosition, int[] Greedy24, string GreedyText);
