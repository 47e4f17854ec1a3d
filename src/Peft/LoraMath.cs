using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>The arithmetic of LoRA that does not depend on modules: the scaling factor, A's initial bound, merging.</summary>
public static class LoraMath
{
    /// <summary>
    /// The factor on the low-rank update B·A. LoRA (Hu et al. 2021, §4.1) uses alpha / r so that changing r does not
    /// require retuning the learning rate; rsLoRA (Kalajdzievski 2023) shows alpha / sqrt(r) keeps the update's scale
    /// stable as r grows. peft computes exactly these (`lora_alpha / r`, `lora_alpha / math.sqrt(r)`).
    /// </summary>
    public static double Scaling(double alpha, int r, bool useRsLora)
    {
        if (r <= 0) throw new ArgumentException($"LoRA rank r={r} must be positive");
        return useRsLora ? alpha / Math.Sqrt(r) : alpha / r;
    }

    /// <summary>
    /// The half-width of the uniform distribution A starts from: torch's `kaiming_uniform_(w, a=sqrt(5))` as peft's
    /// `reset_lora_parameters` calls it (the nn.Linear default). gain = sqrt(2 / (1 + a²)) for leaky_relu, std =
    /// gain / sqrt(fan_in), bound = sqrt(3)·std; with a = sqrt(5) this is 1 / sqrt(fan_in), fan_in = A's column count.
    /// </summary>
    public static double KaimingUniformBound(long fanIn)
    {
        double a = Math.Sqrt(5.0);
        double gain = Math.Sqrt(2.0 / (1.0 + a * a));
        double std = gain / Math.Sqrt(fanIn);
        return Math.Sqrt(3.0) * std;
    }

    /// <summary>
    /// The dense weight a merged checkpoint stores: W + scaling · (B @ A), computed in fp32 and returned in
    /// <paramref name="denseW"/>'s dtype. W [out, in], A [r, in], B [out, r].
    /// </summary>
    public static Tensor MergedWeight(Tensor denseW, Tensor A, Tensor B, double scaling)
    {
        if (A.ndim != 2 || B.ndim != 2 || denseW.ndim != 2 || B.shape[1] != A.shape[0]
            || denseW.shape[0] != B.shape[0] || denseW.shape[1] != A.shape[1])
            throw new ArgumentException(
                $"cannot merge: W {Shape(denseW)}, A {Shape(A)}, B {Shape(B)} must be [out, in], [r, in], [out, r]");
        using var scope = NewDisposeScope();
        var delta = torch.matmul(B.to(ScalarType.Float32), A.to(ScalarType.Float32)).mul_(scaling);  // (out, in)
        var merged = denseW.to(ScalarType.Float32).add(delta).to(denseW.dtype);
        return merged.MoveToOuterDisposeScope();
    }

    internal static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
}
