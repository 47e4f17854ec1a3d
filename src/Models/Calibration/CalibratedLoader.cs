using System.Diagnostics;
using QLoraNet.Formats;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models.Calibration;

/// <summary>What a calibrated load did, layer by layer (for the CLI's report).</summary>
/// <param name="Layer">0-based layer index.</param>
/// <param name="Seconds">wall time of the layer (read, calibrate, quantize, next input), its device work included.</param>
/// <param name="Layers">the model's layer count.</param>
/// <param name="TotalSeconds">wall time from the start of the first layer to the end of this one.</param>
public sealed record CalibrationProgress(int Layer, int Layers, double Seconds, double TotalSeconds);

/// <summary>
/// Loads a float checkpoint into a model whose decoder linears are in a calibrated format (GPTQ, AWQ, SmoothQuant),
/// streaming layer by layer as AutoGPTQ and AutoAWQ do: the calibration ids go through the embedding once, then for
/// each decoder layer only that layer's tensors are read (linears dense in fp32 for the algorithms), its
/// <see cref="ILayerQuantizer"/> quantizes it in place from its input activations over the N x L calibration tokens
/// and returns the next layer's input, and the float copy is dropped. The final norm and head are read last (the
/// head dense, through the caller's policy). Memory beyond the quantized model being built: one layer's fp32
/// weights, two (N, L, hidden) activation tensors in the compute dtype (this layer's input and output), what the
/// method keeps per layer (GPTQ: the (in, in) fp32 Hessians of one group of linears; AWQ: one input per scaling
/// group of linears; SmoothQuant: a max per channel), and one chunk's transients (<paramref name="chunkSamples"/> samples).
/// </summary>
public static class CalibratedLoader
{
    /// <param name="chunkSamples">samples per forward; null = as many as keep a chunk near 4096 tokens.</param>
    public static LlamaForCausalLM Load(string modelDir, BaseFormat format, CalibrationSet calibration, LoadOptions options,
        Action<CalibrationProgress>? progress = null, int? chunkSamples = null)
    {
        if (!format.NeedsCalibration) throw new ArgumentException($"{format} is not a calibrated format; load it with LlamaLoader");
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"model directory '{modelDir}' does not exist");
        var arch = ModelFamilies.Load(modelDir);
        ArchitectureSupport.Require(arch, Path.Combine(modelDir, ModelArchitecture.ConfigFileName));
        // A BitNet model is what it computes only through ternary linears (LlamaLoader.RequireTernary): no calibrated base.
        if (arch.TernaryLinears)
            throw new NotSupportedException($"{modelDir}: a {arch.Family} model's linears are BitNet b1.58 linears (ternary weights, 8-bit activations), not {format}; load it with base format ternary (--quantization ternary, quantization.type: ternary)");
        calibration.Check(arch);
        var quantizer = LayerQuantizers.For(format);

        using var ckpt = CheckpointReader.Open(modelDir);
        if (QuantizedCheckpoint.IsQuantized(ckpt))
            throw new InvalidDataException($"{modelDir}: already a quantized checkpoint; calibrate from the original float weights");
        var expected = arch.ExpectedTensors().ToDictionary(e => e.Name, StringComparer.Ordinal);
        LlamaLoader.Validate(ckpt, arch, expected, modelDir, null);

        var device = options.Device;
        var fused = (options.Kernels ?? QLoraNet.Quant.Kernels.KernelSelection.Portable).Fused;
        var frozenDType = options.FrozenDType ?? options.ComputeDType;
        Tensor Read(string name, ScalarType dtype)
        {
            using var raw = ckpt.Read(name);
            return raw.to(dtype, device, copy: true).DetachFromDisposeScope();
        }

        var layers = new List<LlamaDecoderLayer>();
        Tensor? embedding = null, hidden = null;
        try
        {
            long n = calibration.Samples, length = calibration.SequenceLength;
            int chunk = chunkSamples ?? (int)Math.Max(1, 4096 / length);
            embedding = Read(arch.EmbeddingWeight, frozenDType);
            Tensor cos, sin;
            using (var rotary = new RotaryEmbedding("rotary_emb", arch.Rope, options.ComputeDType, device))
            using (var positions = arange(length, ScalarType.Int64, device).unsqueeze(0))
            using (no_grad())
            {
                (cos, sin) = rotary.call(positions);                                     // (1, L, headDim)
                using var ids = calibration.Ids.to(device);
                hidden = LlamaModel.EmbedInput(embedding, ids, options.ComputeDType, arch.ScaleEmbeddings);   // (N, L, hidden)
            }
            using (cos)
            using (sin)
            {
                var total = Stopwatch.StartNew();
                for (int i = 0; i < arch.NumLayers; i++)
                {
                    var clock = Stopwatch.StartNew();
                    string p = arch.LayerPrefix(i);
                    // DenseFrozenLinear keeps its own handle (an alias) on the weight, so the read handle is disposed
                    // here: left to the finalizer it would keep each layer's fp32 weights alive until a GC, which a
                    // loop that allocates little managed memory (SmoothQuant) may not see for many layers.
                    var layer = LlamaLoader.BuildLayer(arch, i,
                        l =>
                        {
                            using var weight = Read(p + l.Path + ".weight", ScalarType.Float32);
                            return new DenseFrozenLinear(weight, options.ComputeDType);
                        },
                        name => Read(p + name, frozenDType), fused);
                    layers.Add(layer);
                    var next = quantizer.Quantize(new CalibrationLayer(layer, arch, i, cos, sin, chunk, options.ComputeDType), hidden);
                    hidden.Dispose();
                    hidden = next;
                    // Kernels are queued, not finished, when the host gets here: without the wait a layer's seconds
                    // would be its launch time and its device work would land in a later layer's.
                    if (progress is not null && device.type == DeviceType.CUDA) cuda.synchronize(device);
                    progress?.Invoke(new CalibrationProgress(i, arch.NumLayers, clock.Elapsed.TotalSeconds, total.Elapsed.TotalSeconds));
                }
            }
            hidden.Dispose();
            hidden = null;
            var finalNorm = Read(arch.FinalNormWeight, frozenDType);
            FrozenLinear? head = null;
            if (!arch.TiedHead)
            {
                using var raw = ckpt.Read(arch.HeadWeight);
                using var onDevice = raw.to(device);
                head = options.LinearFactory(arch.HeadName, onDevice);
            }
            var model = LlamaLoader.Assemble(arch, layers, embedding, finalNorm, head, options, fused);
            model.eval();
            return model;
        }
        catch
        {
            foreach (var l in layers) l.Dispose();
            embedding?.Dispose();
            hidden?.Dispose();
            throw;
        }
    }
}
