using QLoraNet.Formats;
using QLoraNet.Peft;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// A merged checkpoint computes what base + adapter computed unmerged, on the tiny Llama with a non-zero adapter
/// on q/v/down of every layer: for a dense base and for an NF4 (double-quantized) base as QLoRA trains on.
/// </summary>
[Trait("tier", "parity")]
public class MergeParityTests
{
    static readonly BaseFormat Nf4Dq = BaseFormat.Parse("nf4-dq");

    [Fact]
    public void Dense_base_fp32_merged_logits_equal_the_unmerged_ones()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        var summary = MergedCheckpoint.Write(Paths.TinyModel, adapter, tmp["merged"], new MergeOptions(DType: ScalarType.Float32));
        Assert.Equal(12, summary.MergedModules);

        using var unmerged = MergeTestAdapter.LoadUnmerged(adapter);
        using var merged = MergeTestAdapter.LoadBase(dir: tmp["merged"]);
        using var baseModel = MergeTestAdapter.LoadBase();
        using var expected = MergeTestAdapter.Logits(unmerged);
        using var actual = MergeTestAdapter.Logits(merged);
        using var original = MergeTestAdapter.Logits(baseModel);
        Assert.True(MergeTestAdapter.MaxAbsDiff(expected, original) > 0.1, "the adapter must change the logits");
        double tolerance = MergeTestAdapter.Fp32Tolerance(expected);
        Assert.True(MergeTestAdapter.MaxAbsDiff(expected, actual) <= tolerance, $"max abs diff {MergeTestAdapter.MaxAbsDiff(expected, actual)}, bound {tolerance}");
    }

    [Fact]
    public void Nf4_base_merged_logits_equal_the_quantized_base_plus_lora()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"], baseFormat: Nf4Dq);
        MergedCheckpoint.Write(Paths.TinyModel, adapter, tmp["merged"], new MergeOptions(DType: ScalarType.Float32, BaseFormat: Nf4Dq));
        MergedCheckpoint.Write(Paths.TinyModel, adapter, tmp["naive"], new MergeOptions(DType: ScalarType.Float32));

        using var unmerged = MergeTestAdapter.LoadUnmerged(adapter, Nf4Dq);   // what QLoRA training computed
        using var merged = MergeTestAdapter.LoadBase(dir: tmp["merged"]);      // dense: dequant(W) + s·B·A
        using var naive = MergeTestAdapter.LoadBase(dir: tmp["naive"]);        // dense: W + s·B·A
        using var expected = MergeTestAdapter.Logits(unmerged);
        using var actual = MergeTestAdapter.Logits(merged);
        using var wrong = MergeTestAdapter.Logits(naive);
        double tolerance = MergeTestAdapter.Fp32Tolerance(expected);
        Assert.True(MergeTestAdapter.MaxAbsDiff(expected, actual) <= tolerance, $"max abs diff {MergeTestAdapter.MaxAbsDiff(expected, actual)}, bound {tolerance}");
        // Merging into the original W instead adds NF4's rounding error back: logits off by 1.73 (measured).
        Assert.True(MergeTestAdapter.MaxAbsDiff(expected, wrong) > 0.1, $"naive diff {MergeTestAdapter.MaxAbsDiff(expected, wrong)}");
    }

    [Fact]
    public void Bf16_output_stays_within_bf16_rounding_of_the_unmerged_logits()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        var summary = MergedCheckpoint.Write(Paths.TinyModel, adapter, tmp["merged"], new MergeOptions());
        Assert.Equal(ScalarType.BFloat16, summary.DType);  // the checkpoint's own dtype is the default
        using (var ckpt = CheckpointReader.Open(tmp["merged"]))
            Assert.All(ckpt.Names, n => Assert.Equal(ScalarType.BFloat16, ckpt.Info(n).DType));

        using var unmerged = MergeTestAdapter.LoadUnmerged(adapter);
        using var merged = MergeTestAdapter.LoadBase(dir: tmp["merged"]);
        using var expected = MergeTestAdapter.Logits(unmerged);
        using var actual = MergeTestAdapter.Logits(merged);
        double diff = MergeTestAdapter.MaxAbsDiff(expected, actual);
        Assert.True(diff > 0 && diff < Bf16Tolerance, $"max abs diff {diff}");
    }

    /// <summary>
    /// Writing W + s·B·A in bf16 rounds each merged weight to 8 significant bits (relative error up to 2^-9); on the
    /// tiny model (logits of magnitude ~10) that moved the logits by at most 0.0265 (measured, fp32 compute), against
    /// 8.6e-6 for the fp32 output. Asserted with a margin of 2.
    /// </summary>
    const double Bf16Tolerance = 0.05;
}
