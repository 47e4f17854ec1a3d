using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

[Collection(nameof(ProcessMemoryCollection))]
[Trait("tier", "unit")]
public class QuantizationAwareLoraMemoryTests
{
    /// <summary>
    /// Between forward and backward, QAT-LoRA keeps x~, A and B: no (out, in) tensor. A 4096 x 4096 fp32 fake weight is
    /// 64 MiB, above glibc's largest mmap threshold, so a copy kept for backward shows in the resident set
    /// (as in FrozenMatMulMemoryTests). The control, autograd over the dense fake(W + s·B·A) with the STE written as
    /// w + (q - w).detach(), keeps the merged weight and its rounding and proves the measurement sees them.
    /// </summary>
    [Fact]
    public void Forward_keeps_no_weight_sized_tensor_for_backward()
    {
        using var scope = NewDisposeScope();
        const long n = 4096;
        const long denseBytes = n * n * 4;
        var fake = BaseFormat.Parse("int8").FakeQuantization!;
        var w = randn(n, n, generator: new Generator(1)) * 0.02;
        var aware = new QuantizationAwareLinear(new DenseFrozenLinear(w, ScalarType.Float32), fake);
        w.Dispose();
        var lora = new LoraLinear(aware, r: 4, alpha: 8, dropout: 0, useRsLora: false, new Generator(2));
        using (no_grad()) lora.B.normal_(0, 0.01, new Generator(3));
        var x = randn(1, n, generator: new Generator(4)).requires_grad_(true);
        lora.forward(x).sum().backward(); // warm up: allocator

        long before = LiveResidentSet.Bytes;
        var y = lora.forward(x);
        long held = LiveResidentSet.Bytes - before;
        Assert.True(held < denseBytes / 4, $"forward left {held >> 20} MiB resident; the fake weight is {denseBytes >> 20} MiB");
        y.sum().backward();
        Assert.Equal(new long[] { 4, n }, lora.A.grad!.shape);

        long beforeControl = LiveResidentSet.Bytes;
        Tensor yControl;
        using (var control = NewDisposeScope())   // our handles go; what autograd saved stays
        {
            var merged = aware.Inner.DequantizeWeight(ScalarType.Float32) + lora.B.matmul(lora.A) * lora.Scaling;
            Tensor q;
            using (no_grad()) q = fake.Weight(merged.detach());
            yControl = nn.functional.linear(x, merged + (q - merged).detach()).MoveToOuterDisposeScope();
        }
        long heldControl = LiveResidentSet.Bytes - beforeControl;
        Assert.True(heldControl > denseBytes * 3 / 4, $"control held only {heldControl >> 20} MiB");
        yControl.sum().backward();
    }
}
