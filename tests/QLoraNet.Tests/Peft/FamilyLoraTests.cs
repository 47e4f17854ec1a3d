using System.Text.Json.Nodes;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models.Families;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// LoRA, QLoRA training, peft files and merge over every family fixture: a fresh adapter (B = 0) computes the base;
/// an NF4 base trains; the adapter's keys and target_modules are peft's; a merged checkpoint computes what the
/// unmerged adapter model did (Qwen2's q/k/v biases pass through) and keeps config.json and the tokenizer files.
/// </summary>
[Trait("tier", "parity")]
public class FamilyLoraTests
{
    static BuiltModel Build(string family, BaseFormat format, LoraSettings? lora = null, string? adapterDir = null, string? dir = null, bool checkpointing = false) =>
        FamilyLora.Build(family, format, lora, adapterDir, dir, checkpointing);

    static readonly LoraSettings AllLinear = FamilyLora.AllLinear;
    static readonly BaseFormat Dense = FamilyLora.Dense;
    static Tensor Logits(LlamaForCausalLM model, string family) => FamilyLora.Logits(model, family);
    static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void A_fresh_adapter_computes_the_base_exactly(string family)
    {
        using var plain = Build(family, Dense);
        using var adapted = Build(family, Dense, AllLinear);
        adapted.Model.eval();
        Assert.Equal(7 * plain.Architecture.NumLayers, AdapterFiles.LoraModules(adapted.Model).Count);
        using var expected = Logits(plain.Model, family);
        using var actual = Logits(adapted.Model, family);
        // B = 0 adds exactly nothing to any linear; but without a graph the plain model adds each layer's MLP residual
        // inside its bare down projection's GEMM (Quant.ResidualProduct: the fp32 sum rounded once) where the adapted
        // one, with LoRA on down, adds after the product (rounded twice): a last-bit difference per layer, ~1e-5 on
        // these logits (|logit| < 45, a few fp32 ulps), within the families' parity bound of 1e-4. A non-zero update
        // moves them by more than 0.1 (Merged_logits_equal_the_unmerged_adapter_model). A family with post-MLP norms
        // (Gemma 2) adds after the product in both, so its logits stay equal bit for bit.
        if (plain.Model.modules().OfType<LlamaDecoderLayer>().All(l => l.Norm(NormRole.PostMlp) is not null))
            Assert.Equal(0.0, MaxDiff(expected, actual));
        Assert.True(MaxDiff(expected, actual) < 1e-4, $"{family}: max |Δ logit| {MaxDiff(expected, actual):E2}");
    }

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void An_nf4_base_trains_and_the_loss_falls(string family)
    {
        using var built = Build(family, BaseFormat.Parse("nf4-dq"), AllLinear with { Dropout = 0.05 });
        var model = built.Model;
        Assert.All(model.modules().OfType<LoraLinear>(), l => Assert.IsType<FourBitLinear>(l.BaseLayer));
        var trainable = FamilyLora.Trainable(model);
        Assert.Equal(2 * 7 * built.Architecture.NumLayers, trainable.Count);
        var losses = FamilyLora.Train(model, trainable, family);
        Assert.True(losses[^1] < losses[0] - 0.2, $"{family}: losses {string.Join(", ", losses.Select(l => l.ToString("F3")))}");
    }

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void Gradient_checkpointing_gives_the_same_lora_gradients(string family)
    {
        (float Loss, Tensor[] Grads) Run(bool checkpointing)
        {
            using var built = Build(family, Dense, AllLinear, checkpointing: checkpointing);
            return FamilyLora.LossAndAdapterGradients(built.Model, FamilyReference.Of(family).HeldoutIds.Take(40).ToArray());
        }
        var plain = Run(false);
        var ckpt = Run(true);
        // The checkpointed forward runs without a graph, where q/k/v (and gate/up) share one down GEMM: a different
        // summation order than three, so the losses agree to fp32 rounding (bit for bit only where a CPU's BLAS sums
        // alike), as the gradients below do.
        Assert.True(Math.Abs(plain.Loss - ckpt.Loss) <= 1e-5 * Math.Abs(plain.Loss), $"{family}: loss {plain.Loss} vs {ckpt.Loss}");
        double largest = plain.Grads.Max(g => g.abs().max().item<float>());
        for (int i = 0; i < plain.Grads.Length; i++)
        {
            // Against the largest gradient entry of the pass: a small entry (a tensor of small gradients, or one near
            // zero) is a difference of larger terms and carries their rounding, not its own (fp32, sums over the tiny
            // models' widths: well under 1e-5 of the largest).
            double bound = 1e-5 * largest;
            Assert.True(MaxDiff(plain.Grads[i], ckpt.Grads[i]) <= bound, $"{family}: gradient {i} differs by {MaxDiff(plain.Grads[i], ckpt.Grads[i]):E2} (bound {bound:E2})");
        }
    }

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void Adapter_keys_and_target_modules_are_the_ones_peft_writes(string family)
    {
        // peft's default target_modules for llama, mistral, qwen2, gemma and gemma2 are all [q_proj, v_proj]
        // (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING); ours stay q/k/v/o for every family. The module paths
        // are the Hugging Face ones, so the keys are base_model.model.<path>.lora_A/B.weight for all of them.
        using var tmp = Paths.Temp();
        using var built = Build(family, Dense, new LoraSettings(R: 4, Alpha: 8));
        AdapterFiles.Save(tmp.Path, built.Model, built.Adapter!);
        var config = AdapterConfig.Load(tmp.Path);
        Assert.Equal(["q_proj", "k_proj", "v_proj", "o_proj"], config.Lora.Targets);
        var a = built.Architecture;
        using var file = SafeTensorsFile.Open(Path.Combine(tmp.Path, AdapterFiles.WeightsFileName));
        var expected = Enumerable.Range(0, a.NumLayers).SelectMany(i => a.LayerLinears.Where(l => l.IsAttention).SelectMany(l => new[]
        {
            ($"base_model.model.model.layers.{i}.{l.Path}.lora_A.weight", new long[] { 4, l.InFeatures }),
            ($"base_model.model.model.layers.{i}.{l.Path}.lora_B.weight", new long[] { l.OutFeatures, 4 }),
        })).ToDictionary(e => e.Item1, e => e.Item2);
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), file.Names.Order(StringComparer.Ordinal));
        foreach (var (key, shape) in expected) Assert.Equal(shape, file.Info(key).Shape);

        using var all = Build(family, Dense, AllLinear);
        AdapterFiles.Save(tmp["all"], all.Model, all.Adapter!);
        Assert.Equal(["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"], AdapterConfig.Load(tmp["all"]).Lora.Targets);
    }

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void Merged_logits_equal_the_unmerged_adapter_model(string family)
    {
        using var tmp = Paths.Temp();
        string adapter = FamilyLora.NonZeroAdapter(family, tmp["adapter"]);
        var summary = MergedCheckpoint.Write(FamilyReference.DirOf(family), adapter, tmp["merged"], new MergeOptions(DType: ScalarType.Float32));
        using var baseModel = Build(family, Dense);
        Assert.Equal(7 * baseModel.Architecture.NumLayers, summary.MergedModules);

        using var unmerged = Build(family, Dense, adapterDir: adapter);
        unmerged.Model.eval();
        using var merged = Build(family, Dense, dir: tmp["merged"]);
        using var expected = Logits(unmerged.Model, family);
        using var actual = Logits(merged.Model, family);
        using var original = Logits(baseModel.Model, family);
        Assert.True(MaxDiff(expected, original) > 0.1, $"{family}: the adapter must change the logits");
        // fp32: W' = W + s·B·A rounds once per weight where the unmerged model adds s·B(A x) to W x; the logits
        // (|logit| < 45) move by a few ulps of the largest partial sums, ~1e-5 (the 11M tiny Llama's merge: 1.2e-5),
        // so the families' parity bound of 1e-4 holds with room.
        Assert.True(MaxDiff(expected, actual) < 1e-4, $"{family}: merged vs unmerged max |Δ logit| {MaxDiff(expected, actual):E2}");

        // Biases (Qwen2's q/k/v) pass through the merge unchanged: LoRA adds to base(x) + bias, the merged linear keeps it.
        using var source = CheckpointReader.Open(FamilyReference.DirOf(family));
        using var written = CheckpointReader.Open(tmp["merged"]);
        var biases = source.Names.Where(n => n.EndsWith(".bias")).ToList();
        Assert.Equal(family == "qwen2" ? 3 * 4 : 0, biases.Count);
        foreach (var name in biases)
        {
            using var before = source.Read(name).to(ScalarType.Float32);
            using var after = written.Read(name);
            Assert.True(before.eq(after).all().item<bool>(), name);
        }
    }

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void A_merged_directory_keeps_config_and_tokenizer_files_and_reloads_with_parity(string family)
    {
        using var tmp = Paths.Temp();
        using (var fresh = Build(family, Dense, AllLinear)) AdapterFiles.Save(tmp["adapter"], fresh.Model, fresh.Adapter!);   // B = 0
        string source = FamilyReference.DirOf(family);
        MergedCheckpoint.Write(source, tmp["adapter"], tmp["merged"], new MergeOptions());      // the checkpoint's own dtype (bf16)

        // config.json: the same values (dtype stays bfloat16); tokenizer and generation files: byte for byte.
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json"))), JsonNode.Parse(File.ReadAllText(tmp["merged/config.json"]))));
        foreach (var file in MergedCheckpoint.CopiedFiles.Where(f => File.Exists(Path.Combine(source, f))))
            Assert.Equal(File.ReadAllBytes(Path.Combine(source, file)), File.ReadAllBytes(Path.Combine(tmp["merged"], file)));
        Assert.True(File.Exists(tmp["merged/tokenizer.json"]) || File.Exists(tmp["merged/tokenizer.model"]));

        // W + 0 in fp32, written back in bf16, is the stored weight: the merged model meets the same references.
        var r = FamilyReference.Of(family);
        using var merged = Build(family, Dense, dir: tmp["merged"]);
        foreach (var c in r.Cases)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var last = merged.Model.forward(tensor(c.InputIds.Select(i => (long)i).ToArray(), [1, c.InputIds.Length]))[0, -1];
            Assert.True((last - tensor(c.LastLogits)).abs().max().item<float>() < 1e-4, $"{family}/{c.Name}");
        }
        var longest = r.Cases.MaxBy(c => c.InputIds.Length)!;
        Assert.Equal(longest.Greedy24, TextGenerator.Generate(merged.Model, longest.InputIds, new GenerationOptions(MaxNewTokens: 24)).ToArray());
    }
}
