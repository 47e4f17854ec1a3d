using QLoraNet.Kernels;
using QLoraNet.Models;
using QLoraNet.Peft;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;

namespace QLoraNet.Tests.Kernels;

/// <summary>
/// One definition of LoRA dropout's bits for the torch-op reference (<see cref="RandomStream"/>) and the fused
/// kernel (Cuda/dropout.cu): the stream's masks equal SplitMix64 written out per element, as dropout.cu computes it
/// (key = hash(seed, draw), element i = 16 bits (i % 4) of hash(i / 4 + 1, key)), and golden values that
/// tests/KernelsOnCpu/check_dropout.cpp holds the CUDA source to on the CPU as well. The device run of the kernel
/// against the reference is `bench kernel --only dropout`.
/// </summary>
[Trait("tier", "unit")]
public class DropoutBitsTests
{
    // RandomStream(1234)'s first draw: its key and its first 12 elements' 16 random bits (also in check_dropout.cpp).
    const ulong GoldenKey = 0x29ff45df4487fcb8UL;
    static readonly int[] GoldenBits = [16373, 53319, 8678, 21795, 2363, 13082, 58734, 10480, 63461, 8014, 1899, 8819];

    static ulong Finalize(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>dropout.cu's bits for element i, one element at a time on the host.</summary>
    static int BitsOf(ulong key, long i) => (int)((Finalize((ulong)(i / 4 + 1) * 0x9E3779B97F4A7C15UL + key) >> (int)(16 * (i % 4))) & 0xffff);

    [Fact]
    public void The_first_draw_of_seed_1234_has_the_golden_key_and_bits()
    {
        var stream = new RandomStream(1234);
        Assert.Equal(GoldenKey, stream.NextKey());
        Assert.Equal(new RandomStream.Position(1234, 1), stream.State);
        for (int i = 0; i < GoldenBits.Length; i++) Assert.Equal(GoldenBits[i], BitsOf(GoldenKey, i));
        // The tensor ops agree: element i is kept at threshold bits_i and dropped at bits_i + 1.
        using var scope = NewDisposeScope();
        for (int i = 0; i < GoldenBits.Length; i++)
        {
            Assert.True(stream.MaskOf(GoldenKey, [GoldenBits.Length], GoldenBits[i], CPU)[i].item<bool>(), $"element {i} at its bits");
            Assert.False(stream.MaskOf(GoldenKey, [GoldenBits.Length], GoldenBits[i] + 1, CPU)[i].item<bool>(), $"element {i} above its bits");
        }
    }

    [Theory]
    [InlineData(0.05)]
    [InlineData(0.5)]
    public void Masks_of_any_shape_equal_splitmix64_written_out_per_element(double p)
    {
        using var scope = NewDisposeScope();
        var stream = new RandomStream(99);
        stream.NextKey();                                    // a later draw: the key depends on the draw count
        var position = stream.State;
        ulong key = stream.NextKey();
        long[] shape = [7, 13, 11];                          // 1001 elements: the last hash word only partly used
        long threshold = RandomStream.DropThreshold(p);
        var mask = stream.MaskOf(key, shape, threshold, CPU).reshape(-1);
        var expected = Enumerable.Range(0, 1001).Select(i => BitsOf(key, i) >= threshold).ToArray();
        Assert.Equal(expected, mask.data<bool>().ToArray());
        // KeepMask is the same draw: the next key and this mask.
        stream.Restore(position);
        AssertIdentical(stream.KeepMask(shape, p, CPU).reshape(-1), mask, "KeepMask");
    }

    [Fact]
    public void On_the_cpu_lora_dropout_takes_the_reference_and_counts_it()
    {
        using var scope = NewDisposeScope();
        var kernels = Cpu;
        Assert.Equal(FusedPath.TorchOps, kernels.Dropout.Path);
        using var dropout = new LoraDropout(0.1, new RandomStream(5), kernels.Dropout);
        dropout.train();
        var x = Randn([4, 16], ScalarType.Float32, 1);
        Assert.False(kernels.Dropout.Fits(x));
        var y = dropout.forward(x);
        var keep = new RandomStream(5).KeepMask(x.shape, 0.1, CPU);
        AssertIdentical(y, x.mul(keep).mul_(1 / (1 - RandomStream.DropProbability(0.1))), "dropout");
        Assert.Equal((0L, 1L), kernels.Dropout.Calls);
        Assert.Throws<ArgumentException>(() => kernels.Dropout.Apply(x, 1, 6554, 1.1, new BackwardHandles()));
    }
}
