using QLoraNet.Models;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Quant;

/// <summary>Memory measurements need the process to themselves: this collection runs alone.</summary>
[CollectionDefinition(nameof(ProcessMemoryCollection), DisableParallelization = true)]
public sealed class ProcessMemoryCollection;

[Collection(nameof(ProcessMemoryCollection))]
[Trait("tier", "unit")]
public class FrozenMatMulMemoryTests
{
    /// <summary>
    /// Between forward and backward the graph must hold only the packed weight. A 4096 x 4096 fp32 dense copy is
    /// 64 MiB, above glibc's largest mmap threshold (32 MiB), so it is mapped on allocation and unmapped on free and
    /// shows up exactly in the resident set. The control, an ordinary matmul on the same dense weight, proves the
    /// measurement sees a copy that autograd keeps.
    /// </summary>
    [Fact]
    public void Forward_keeps_no_dequantized_copy_for_backward()
    {
        using var scope = NewDisposeScope();
        const long n = 4096;
        const long denseBytes = n * n * 4;
        var weight = randn(n, n, generator: new Generator(1)) * 0.02;
        var linear = FrozenLinearFactory.Create(weight, BaseFormat.Parse("nf4"), ScalarType.Float32, CPU);
        weight.Dispose();
        var x = randn(1, n, generator: new Generator(2)).requires_grad_(true);
        linear.forward(x).sum().backward(); // warm up: code tables, allocator

        long before = LiveResidentSet.Bytes;
        var y = linear.forward(x);
        long held = LiveResidentSet.Bytes - before;
        Assert.True(held < denseBytes / 4, $"forward left {held >> 20} MiB resident; the dense weight is {denseBytes >> 20} MiB");
        y.sum().backward();
        Assert.Equal(new long[] { 1, n }, x.grad!.shape);

        // Control: autograd of a plain matmul keeps the dense weight alive after we drop our handle to it.
        long beforeControl = LiveResidentSet.Bytes;
        var dense = linear.DequantizeWeight(ScalarType.Float32);
        var yControl = x.matmul(dense.t());
        dense.Dispose();
        long heldControl = LiveResidentSet.Bytes - beforeControl;
        Assert.True(heldControl > denseBytes * 3 / 4, $"control held only {heldControl >> 20} MiB");
        yControl.sum().backward();
    }
}
