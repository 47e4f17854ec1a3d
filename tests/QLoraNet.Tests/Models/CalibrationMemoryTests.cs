using QLoraNet.Models;
using QLoraNet.Models.Calibration;
using QLoraNet.Quant;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>
/// The calibrated loader streams layer by layer: after each layer, what stays alive beyond the previous layer is
/// that layer's quantized tensors (its linears' stored buffers, its norms), nothing of its float weights or of the
/// algorithm's statistics. Counted as live native tensors (TorchSharp's per-thread count of undisposed tensors):
/// a leaked handle keeps its storage until a garbage collection that a loop allocating little managed memory may
/// not run for many layers (on an H200, SmoothQuant on a 7B model kept each layer's fp32 weights, ~0.8 GB a layer).
/// </summary>
public class CalibrationMemoryTests
{
    [Theory]
    [Trait("tier", "unit")]
    [InlineData("smoothquant")]
    [InlineData("gptq4-g16")]
    [InlineData("awq4-g16")]
    public void Each_layer_leaves_only_its_quantized_tensors_alive(string spelling)
    {
        var format = BaseFormats.Parse(spelling);
        using var ids = randint(0, 256, [4, 32], dtype: ScalarType.Int64);
        var options = new LoadOptions(CPU, ScalarType.BFloat16, (_, w) => new DenseFrozenLinear(w, ScalarType.BFloat16), ScalarType.Float32);
        var live = new List<long>();
        using var model = CalibratedLoader.Load(Paths.TinyModel, format, new CalibrationSet(ids), options,
            _ => live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount));

        var layers = model.Model.Layers;
        Assert.Equal(layers.Count, live.Count);
        for (int i = 1; i < live.Count; i++)
        {
            int owned = layers[i].buffers().Count() + layers[i].parameters().Count();
            Assert.True(live[i] - live[i - 1] == owned,
                $"{spelling}: layer {i} left {live[i] - live[i - 1]} more live tensors, its quantized layer holds {owned} (live after each layer: {string.Join(", ", live)})");
        }
    }
}
