using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models.Families;

/// <summary>
/// Sliding windows in training: two documents packed into one row (block-diagonal causal mask, positions restarting)
/// compute what each computes alone, also when both are longer than the window (the packed mask AND the band), on
/// Mistral (SDPA path) and Gemma 2 (explicit soft-capped path, alternating windows).
/// </summary>
[Trait("tier", "parity")]
public class PackedWindowTests
{
    [Theory]
    [InlineData("mistral")]
    [InlineData("gemma2")]
    public void Packed_rows_with_a_window_equal_the_documents_computed_alone(string family)
    {
        var r = FamilyReference.Of(family);
        using var model = r.LoadFp32();
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long[] a = r.HeldoutIds.Take(40).ToArray(), b = r.HeldoutIds.Skip(100).Take(30).ToArray();   // both > window 16
        var row = tensor(a.Concat(b).ToArray(), [1, a.Length + b.Length]);
        var positions = tensor(Enumerable.Range(0, a.Length).Concat(Enumerable.Range(0, b.Length)).Select(i => (long)i).ToArray(), [1, a.Length + b.Length]);
        var sequenceIds = tensor(a.Select(_ => 0L).Concat(b.Select(_ => 1L)).ToArray(), [1, a.Length + b.Length]);
        var packed = model.forward(row, positions, AttentionMask.BlockCausal(sequenceIds), null)[0];   // (Ta + Tb, vocab)

        var alone = cat([model.forward(tensor(a, [1, a.Length]))[0], model.forward(tensor(b, [1, b.Length]))[0]], 0);
        double diff = (packed - alone).abs().max().item<float>();
        Assert.True(diff < 1e-4, $"{family}: max |Δ logit| packed vs alone {diff:E2}");

        // The window matters here: full attention over the first document would give other logits.
        var full = LoadWithoutWindows(r);
        var unwindowed = full.forward(tensor(a, [1, a.Length]))[0];
        Assert.True((unwindowed - alone.narrow(0, 0, a.Length)).abs().max().item<float>() > 1e-2);
        full.Dispose();
    }

    static LlamaForCausalLM LoadWithoutWindows(FamilyReference r)
    {
        using var tmp = Paths.Temp();
        foreach (var f in Directory.GetFiles(r.Dir)) File.Copy(f, tmp[Path.GetFileName(f)]);
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(tmp["config.json"]))!.AsObject();
        config["sliding_window"] = null;
        config.Remove("layer_types");
        if (r.Name == "gemma2") config["layer_types"] = new System.Text.Json.Nodes.JsonArray("full_attention", "full_attention", "full_attention", "full_attention");
        File.WriteAllText(tmp["config.json"], config.ToJsonString());
        return LlamaLoader.Load(tmp.Path, new LoadOptions(CPU, ScalarType.Float32, (_, w) => new QLoraNet.Quant.DenseFrozenLinear(w, ScalarType.Float32)));
    }
}
