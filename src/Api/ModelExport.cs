using QLoraNet.Formats;
using QLoraNet.Peft;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet;

/// <summary>Writes a fine-tune out: an adapter merged into its base (a Hugging Face checkpoint), or a GGUF file for llama.cpp.</summary>
public static class ModelExport
{
    /// <summary>
    /// W' = dequant(W) + (alpha/r)·B·A for every adapted linear, streamed tensor by tensor into a complete sharded Hugging
    /// Face checkpoint in <paramref name="outputDirectory"/> (written to a temporary directory and renamed when complete).
    /// </summary>
    /// <param name="modelDirectory">the base checkpoint the adapter was trained on.</param>
    /// <param name="adapterDirectory">the PEFT LoRA adapter.</param>
    /// <param name="outputDirectory">where the merged checkpoint goes.</param>
    /// <param name="settings">dtype, the base format the adapter was trained on, overwrite.</param>
    /// <param name="cancellationToken">stops between two tensors; nothing is written then.</param>
    /// <exception cref="QLoraNetModelException">a directory or setting cannot be used.</exception>
    public static Task<MergeResult> MergeAsync(string modelDirectory, string adapterDirectory, string outputDirectory,
        MergeSettings? settings = null, CancellationToken cancellationToken = default)
    {
        settings ??= new MergeSettings();
        cancellationToken.ThrowIfCancellationRequested();
        return Task.Factory.StartNew(() => Errors.Guard(() =>
        {
            LibTorch.Load();
            var options = new MergeOptions(
                DType: settings.DType switch
                {
                    null => null, "bf16" => ScalarType.BFloat16, "fp16" => ScalarType.Float16, "fp32" => ScalarType.Float32,
                    var d => throw new QLoraNetModelException($"merge dtype '{d}' is not one of bf16, fp16, fp32"),
                },
                BaseFormat: Quant.BaseFormat.Parse(settings.BaseFormat),
                Overwrite: settings.Overwrite,
                OnTensor: _ => cancellationToken.ThrowIfCancellationRequested());
            var s = MergedCheckpoint.Write(modelDirectory, adapterDirectory, outputDirectory, options);
            return new MergeResult(outputDirectory, s.MergedModules, s.Tensors, s.Shards.Count, s.Bytes);
        }), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>
    /// A GGUF v3 file for llama.cpp / Ollama (the family's llama.cpp architecture; norms f32), with an adapter folded into the weights
    /// first when one is given.
    /// </summary>
    /// <param name="modelDirectory">the Hugging Face checkpoint.</param>
    /// <param name="outputFile">the .gguf file to write.</param>
    /// <param name="type">weight type: <c>f16</c>, <c>q8_0</c> or <c>q4_0</c>.</param>
    /// <param name="adapterDirectory">a PEFT LoRA adapter to merge, or null.</param>
    /// <param name="overwrite">replace <paramref name="outputFile"/> if it exists.</param>
    /// <param name="cancellationToken">checked before the export starts.</param>
    /// <exception cref="QLoraNetModelException">the model, adapter, type or output cannot be used.</exception>
    public static Task<GgufResult> ToGgufAsync(string modelDirectory, string outputFile, string type = "f16", string? adapterDirectory = null,
        bool overwrite = false, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return Task.Factory.StartNew(() => Errors.Guard(() =>
        {
            var exportType = GgufTypePolicy.Parse(type);
            if (File.Exists(outputFile) && !overwrite) throw new QLoraNetModelException($"{outputFile} already exists; pass overwrite: true to replace it");
            LibTorch.Load();
            using var checkpoint = adapterDirectory is null ? null : CheckpointReader.Open(modelDirectory);
            using var merge = adapterDirectory is null ? null : AdapterMerge.Open(adapterDirectory, checkpoint!, ModelFamilies.Load(modelDirectory));
            var s = GgufExporter.Export(modelDirectory, outputFile, exportType, overwrite, merge is null ? null : merge.Apply);
            return new GgufResult(outputFile, s.Tensors.Count, s.FileBytes, merge?.MergedCount ?? 0, s.Warnings);
        }), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }
}

/// <summary>How <see cref="ModelExport.MergeAsync"/> merges.</summary>
public sealed record MergeSettings
{
    /// <summary>dtype of the written weights: <c>bf16</c>, <c>fp16</c> or <c>fp32</c>; null: the checkpoint's.</summary>
    public string? DType { get; init; }

    /// <summary>The base format the adapter was trained on (QLoRA: <c>nf4-dq</c>): W is quantized and dequantized in it
    /// before B·A is added, so the merged model computes what the adapter was trained against.</summary>
    public string BaseFormat { get; init; } = "none";

    /// <summary>Replace a non-empty output directory (only once the new checkpoint is complete).</summary>
    public bool Overwrite { get; init; }
}

/// <summary>What <see cref="ModelExport.MergeAsync"/> wrote.</summary>
/// <param name="OutputDirectory">the merged checkpoint.</param>
/// <param name="MergedModules">LoRA modules folded in.</param>
/// <param name="Tensors">tensors written.</param>
/// <param name="Shards">safetensors shards.</param>
/// <param name="Bytes">bytes of tensor data.</param>
public sealed record MergeResult(string OutputDirectory, int MergedModules, int Tensors, int Shards, long Bytes);

/// <summary>What <see cref="ModelExport.ToGgufAsync"/> wrote.</summary>
/// <param name="File">the GGUF file.</param>
/// <param name="Tensors">tensors written.</param>
/// <param name="Bytes">the file's size.</param>
/// <param name="MergedModules">LoRA modules folded in (0 without an adapter).</param>
/// <param name="Warnings">tensors that kept another type than asked, and why.</param>
public sealed record GgufResult(string File, int Tensors, long Bytes, int MergedModules, IReadOnlyList<string> Warnings);
