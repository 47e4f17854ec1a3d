using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Models.Calibration;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>How <see cref="ModelBuilder.Build"/> materialises a model.</summary>
/// <param name="Device">where every module lives.</param>
/// <param name="ComputeDType">dtype of activations and of the dequantized weights in the matmuls.</param>
/// <param name="BaseFormat">how the decoder-layer linears are stored ("none" keeps the checkpoint's dtype, unless
/// <paramref name="FrozenDType"/> fixes one).</param>
/// <param name="Kernels">the kernel choices the caller made for <paramref name="Device"/>; null = <see cref="KernelSelection.Portable"/>.</param>
/// <param name="FrozenDType">dtype of every dense frozen tensor: embedding, norms, biases, the output head, and the
/// linears under "none"; null = <paramref name="ComputeDType"/> for those (and "none" keeps the checkpoint's).</param>
/// <param name="GradientCheckpointing">recompute each decoder layer in backward.</param>
/// <param name="UncheckpointedLayers">with checkpointing, the last layers that keep their activations instead
/// (Models.LlamaModel.UncheckpointedLayers).</param>
/// <param name="EmbeddingOnHost">keep the token-embedding table in pinned host memory, gathering each batch's rows onto
/// the GPU (training.embedding_on_host; Models.FrozenEmbedding.OnHost); refused for a head tied to the embedding.</param>
/// <param name="KeepDequantizedWeights">with checkpointing, a recomputed layer keeps its weights' dense copies from the
/// recomputation for its backward (one dequantization each); false dequantizes them again in backward, so they are not
/// held meanwhile, and gate and up dequantize one at a time instead of into one stacked matrix
/// (training.keep_dequantized_weights; Models.LlamaDecoderLayer.KeepWeightsForBackward, Models.LlamaMlp.StackFrozenGateUp).</param>
/// <param name="CheckpointsOnHost">with checkpointing, the recomputed layers keep their inputs in host memory
/// (training.checkpoints_on_host; Models.LlamaModel.CheckpointsOnHost).</param>
/// <param name="NewAdapter">attach fresh LoRA adapters with these settings (training).</param>
/// <param name="AdapterSeed">seed of the new adapters' A matrices.</param>
/// <param name="AdapterDropout">where the new adapters draw their dropout masks (a training run's stream, which its
/// step reseeds); null = each adapter a stream of its own.</param>
/// <param name="AdapterDir">attach the peft adapter in this directory instead (inference).</param>
/// <param name="Aware">quantization-aware training: the decoder linears compute through this format's fake
/// quantization (<see cref="BaseFormat.FakeQuantization"/>; it must have one), LoRA included.</param>
/// <param name="AllowNonFiniteWeights">load base and adapter weights holding NaN/Inf instead of refusing them by name.</param>
/// <param name="AdapterInitDir">start the new adapters from this peft adapter's factors (continued training).</param>
/// <param name="Calibration">the calibration samples a calibrated <paramref name="BaseFormat"/> (GPTQ, AWQ, SmoothQuant)
/// is made from when the directory holds float weights (quantize-on-load, layer by layer).</param>
/// <param name="CalibrationProgress">told after each calibrated layer.</param>
public sealed record ModelBuildOptions(
    Device Device,
    ScalarType ComputeDType,
    BaseFormat BaseFormat,
    KernelSelection? Kernels = null,
    ScalarType? FrozenDType = null,
    bool GradientCheckpointing = false,
    int UncheckpointedLayers = 1,
    LoraSettings? NewAdapter = null,
    long? AdapterSeed = null,
    string? AdapterDir = null,
    RandomStream? AdapterDropout = null,
    bool AllowNonFiniteWeights = false,
    string? AdapterInitDir = null,
    BaseFormat? Aware = null,
    CalibrationSet? Calibration = null,
    Action<CalibrationProgress>? CalibrationProgress = null,
    bool EmbeddingOnHost = false,
    bool KeepDequantizedWeights = true,
    bool CheckpointsOnHost = false);

/// <summary>A built model with what was decided on the way; disposing it disposes the model.</summary>
/// <param name="BaseFormat">the format the decoder linears were actually stored in (for "none" under a fixed frozen dtype, that dtype).</param>
/// <param name="Adapter">the adapter config of the attached LoRA (new: for saving; loaded: as read), or null.</param>
public sealed record BuiltModel(LlamaForCausalLM Model, ModelArchitecture Architecture, BaseFormat BaseFormat,
    KernelSelection Kernels, AdapterConfig? Adapter) : IDisposable
{
    /// <summary>Bytes held by the frozen linears (the quantized base).</summary>
    public long BaseBytes => Model.modules().OfType<FrozenLinear>().Sum(f => f.StorageBytes);

    public void Dispose() => Model.Dispose();
}

/// <summary>
/// The one place a model is assembled from a checkpoint directory: family record, quantize-on-load of the decoder
/// linears (or the stored codes of a `quantize` output), one dtype rule for every dense frozen tensor (the output
/// head included), then LoRA, new or from a peft directory. `train`, the inference verbs and `bench train` all
/// build through here, so they run the same model.
/// </summary>
public static class ModelBuilder
{
    static IFakeQuantization? AwareOf(BaseFormat? aware) => aware is null ? null
        : aware.FakeQuantization ?? throw new ArgumentException($"quantization-aware training to {aware} is not supported; formats with a fake quantizer: {string.Join(", ", BaseFormats.AwareNames)}");

    public static BuiltModel Build(string modelDir, ModelBuildOptions o)
    {
        if (o.NewAdapter is not null && o.AdapterDir is not null)
            throw new ArgumentException("attach either new LoRA adapters or a saved adapter, not both");
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"model directory '{modelDir}' does not exist");
        // Cheap checks first: their errors should not wait for the weights.
        var arch = ModelFamilies.Load(modelDir);
        ArchitectureSupport.Require(arch, Path.Combine(modelDir, ModelArchitecture.ConfigFileName));
        if (o.AdapterDir != null && !Directory.Exists(o.AdapterDir))
            throw new DirectoryNotFoundException($"--adapter: adapter directory '{o.AdapterDir}' does not exist");
        var saved = o.AdapterDir is null ? null : AdapterConfig.Load(o.AdapterDir);
        QuantizedCheckpoint.RequireCompatible(modelDir, o.BaseFormat); // a `quantize` output keeps its stored format

        var kernels = o.Kernels ?? KernelSelection.Portable;
        var denseDType = o.FrozenDType ?? o.ComputeDType;
        var format = o.BaseFormat.KeepsCheckpointDType && o.FrozenDType is { } fixedDType ? new DenseFormat(fixedDType) : o.BaseFormat;
        var load = new LoadOptions(o.Device, o.ComputeDType,
            LinearPolicies.Quantized(arch, format, o.ComputeDType, o.Device, denseDType, kernels, AwareOf(o.Aware)), o.FrozenDType, kernels,
            o.AllowNonFiniteWeights);
        LlamaForCausalLM model;
        if (format.NeedsCalibration && QuantizedCheckpoint.StoredFormat(modelDir) is null)
        {
            var calibration = o.Calibration ?? throw new ArgumentException(
                $"{format} needs calibration data: pass --calibration FILE, or quantize once (`quantize --quantization {format} --calibration FILE --out DIR`) and load DIR");
            model = CalibratedLoader.Load(modelDir, format, calibration, load, o.CalibrationProgress);
        }
        else model = LlamaLoader.Load(modelDir, load);
        try
        {
            model.Model.GradientCheckpointing = o.GradientCheckpointing;
            model.Model.UncheckpointedLayers = o.UncheckpointedLayers;
            model.Model.CheckpointsOnHost = o.CheckpointsOnHost;
            // Not keeping the dense weights is asking for memory over time: gate and up then dequantize one at a time too.
            foreach (var layer in model.Model.Layers)
                (layer.KeepWeightsForBackward, layer.Mlp.StackFrozenGateUp) = (o.KeepDequantizedWeights, o.KeepDequantizedWeights);
            if (o.EmbeddingOnHost)
            {
                // A tied head multiplies by the whole table every step: it must stay where the head computes.
                if (model.HeadPath is null)
                    throw new ArgumentException($"training.embedding_on_host: {modelDir} ties its output head to the embedding (tie_word_embeddings), which reads the whole table every step; set embedding_on_host: false for this model");
                model.Model.MoveEmbeddingToHost(kernels.Fused.HostEmbedding);
            }
            AdapterConfig? adapter = null;
            if (o.NewAdapter is { } lora)
            {
                adapter = AdapterConfig.From(lora, LoraApplier.Apply(model, lora, o.AdapterSeed, o.AdapterDropout, kernels.Fused.Dropout, kernels.Fused.WeightGradient), modelDir)
                    with { Provenance = new AdapterProvenance(format) };
                if (o.AdapterInitDir is { } init) AdapterInit.LoadInto(init, model, lora);
            }
            else if (o.AdapterDir is { } dir)
            {
                AdapterFiles.ApplyAndLoad(dir, model, o.AllowNonFiniteWeights);
                adapter = saved;
            }
            return new BuiltModel(model, arch, format, kernels, adapter);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
