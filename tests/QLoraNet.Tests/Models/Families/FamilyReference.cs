using System.Text.Json;
using QLoraNet.Models;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models.Families;

/// <summary>
/// A family fixture under tests/fixtures/families/&lt;name&gt;/ (a tiny trained Hugging Face checkpoint, unmodified)
/// with the transformers 5.17 outputs its reference.json records (fp32 compute on CPU, eager attention; see the
/// folder's README.md): per prompt the input ids, last-position logits, top-5 ids and 24 greedy ids; the held-out
/// ids and mean loss; the RoPE inverse frequencies.
/// </summary>
public sealed class FamilyReference
{
    /// <summary>The families issue 12 adds, with a fixture each (BitNet's belongs to the formats issue).</summary>
    public static readonly string[] Names = ["llama3", "mistral", "qwen2", "gemma", "gemma2"];

    public static TheoryData<string> All => new(Names);

    public string Name { get; }
    public string Dir { get; }
    public IReadOnlyList<LogitsCase> Cases { get; }
    public long[] HeldoutIds { get; }
    public double HeldoutMeanLoss { get; }
    public float[] RopeInvFreq { get; }

    FamilyReference(string name)
    {
        Name = name;
        Dir = DirOf(name);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Dir, "reference.json")));
        var root = doc.RootElement;
        Cases = root.GetProperty("logits").EnumerateArray().Select(c => new LogitsCase(
            c.GetProperty("name").GetString()!,
            Ints(c.GetProperty("input_ids")),
            c.GetProperty("last_logits").EnumerateArray().Select(x => x.GetSingle()).ToArray(),
            Ints(c.GetProperty("top5_ids")),
            Ints(c.GetProperty("position_argmax")),
            Ints(c.GetProperty("greedy_24").GetProperty("ids")))).ToList();
        var heldout = root.GetProperty("heldout");
        HeldoutIds = Ints(heldout.GetProperty("ids")).Select(i => (long)i).ToArray();
        HeldoutMeanLoss = heldout.GetProperty("mean_loss_fp32").GetDouble();
        RopeInvFreq = root.GetProperty("rope_inv_freq").EnumerateObject().Single().Value.EnumerateArray().Select(x => x.GetSingle()).ToArray();
    }

    static readonly Dictionary<string, FamilyReference> Loaded = new();

    /// <summary>The parsed reference of <paramref name="name"/> (read once per test run; immutable).</summary>
    public static FamilyReference Of(string name)
    {
        lock (Loaded)
        {
            if (!Loaded.TryGetValue(name, out var r)) Loaded[name] = r = new FamilyReference(name);
            return r;
        }
    }

    public static string DirOf(string name) => Path.Combine(Paths.RepoRoot, "tests", "fixtures", "families", name);

    /// <summary>The fixture in fp32 on the CPU with dense fp32 linears: how the reference was computed.</summary>
    public LlamaForCausalLM LoadFp32() =>
        LlamaLoader.Load(Dir, new LoadOptions(CPU, ScalarType.Float32, (_, w) => new DenseFrozenLinear(w, ScalarType.Float32)));

    static int[] Ints(JsonElement a) => a.EnumerateArray().Select(x => x.GetInt32()).ToArray();
}

/// <summary>One reference prompt: "chat" (rendered with the template), "plain", or "long" (longer than any sliding window).</summary>
public sealed record LogitsCase(string Name, int[] InputIds, float[] LastLogits, int[] Top5Ids, int[] PositionArgmax, int[] Greedy24);
