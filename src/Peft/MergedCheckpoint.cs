using QLoraNet.Formats;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// Writes base model + LoRA adapter as one complete Hugging Face checkpoint directory: sharded safetensors with
/// model.safetensors.index.json (<see cref="CheckpointWriter"/>), config.json (dtype updated), generation config and
/// tokenizer files copied. Tensors stream one at a time (read, merge, cast, write), so host memory stays near one
/// tensor, never the model. The directory is built beside the output under a temporary name and renamed into place
/// only when complete; on any failure (including a full disk) the temporary directory is deleted, so nothing
/// half-written ever sits where a model is expected.
/// </summary>
public static class MergedCheckpoint
{
    /// <summary>Files other than weights and config.json that make the directory usable on its own.</summary>
    public static readonly IReadOnlyList<string> CopiedFiles =
        ["generation_config.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "added_tokens.json"];

    public static MergeSummary Write(string modelDir, string adapterDir, string outDir, MergeOptions options)
    {
        string target = Path.GetFullPath(outDir);
        foreach (var (input, what) in new[] { (modelDir, "model"), (adapterDir, "adapter") })
            if (Path.GetFullPath(input).TrimEnd('/') == target.TrimEnd('/'))
                throw new IOException($"output '{outDir}' is the {what} directory being read; write the merged model elsewhere");
        CheckOutput(target, options.Overwrite);
        if (!HasTokenizer(modelDir) && !options.AllowNoTokenizer)
            throw new InvalidDataException(
                $"{modelDir}: has no tokenizer ({string.Join(" or ", TokenizerFiles)}), so the merged checkpoint would not load on its own; copy the base model's tokenizer there, or pass --no-tokenizer to write the weights without one");
        string configPath = Path.Combine(modelDir, ModelArchitecture.ConfigFileName);
        var arch = ModelFamilies.Load(modelDir);  // a readable, supported config, checked before any work
        if (options.Quantization is { Layout: null } q)
            throw new ArgumentException($"a merged checkpoint cannot store {q}: it has no checkpoint layout; write the merge dense and load it with --quantization {q}, or use a format with a layout (nf4, fp4, llm-int8, hqq, ternary)");
        using var reader = CheckpointReader.Open(modelDir, options.AllowNonFiniteWeights);
        // A pre-quantized base is merged from its stored codes, which are exactly what training saw: quantizing them
        // again in the adapter's format would change them (an absmean of ternary codes is not their scale).
        var stored = Models.QuantizedCheckpoint.IsQuantized(reader) ? Models.QuantizedCheckpoint.StoredFormat(modelDir) : null;
        if (stored is not null && options.BaseFormat is { KeepsCheckpointDType: false } trainedOn && trainedOn != stored)
            throw new ArgumentException($"--base {trainedOn}: {modelDir} is stored as {stored}, so the adapter was trained over those codes; pass --base {stored} or none");
        using var merge = AdapterMerge.Open(adapterDir, reader, arch, stored is null ? options.BaseFormat : null);
        var dtype = options.DType ?? StoredDType(reader);
        string config = MergedModelConfig.Rewrite(UserFile.ReadText(configPath, UserFile.MaxJsonBytes, "model config"), configPath, dtype, options.Quantization, arch);

        var producer = new MergedTensors(reader, merge, dtype, options.Quantization, options.OnTensor);
        try
        {
            var layout = producer.Layout();
            IReadOnlyList<string> shards = [];
            AtomicDirectory.Write(target, staging =>
            {
                shards = CheckpointWriter.Write(staging, layout, producer.Produce, options.MaxShardBytes);
                producer.Dispose();
                File.WriteAllText(Path.Combine(staging, ModelArchitecture.ConfigFileName), config);
                foreach (var file in CopiedFiles)
                {
                    string from = Path.Combine(modelDir, file);
                    if (File.Exists(from)) File.Copy(from, Path.Combine(staging, file));
                }
            });
            long bytes = layout.Sum(e => e.Shape.Aggregate(1L, (a, b) => a * b) * SafeTensorsDType.ElementSize(e.DType));
            return new MergeSummary(merge.Modules.Count, layout.Count, shards, dtype, bytes);
        }
        finally
        {
            producer.Dispose();
        }
    }

    /// <summary>The files any of which makes a tokenizer (SentencePiece or Hugging Face tokenizers).</summary>
    public static readonly IReadOnlyList<string> TokenizerFiles = ["tokenizer.model", "tokenizer.json"];

    /// <summary>Whether <paramref name="modelDir"/> holds a tokenizer the merged checkpoint can carry.</summary>
    public static bool HasTokenizer(string modelDir) => TokenizerFiles.Any(f => File.Exists(Path.Combine(modelDir, f)));

    /// <summary>Refuses a file, or a non-empty directory without overwrite, before any work is done.</summary>
    static void CheckOutput(string target, bool overwrite)
    {
        if (File.Exists(target)) throw new IOException($"output '{target}' is a file; give a directory for the merged model");
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any() && !overwrite)
            throw new IOException($"output directory '{target}' exists and is not empty; pass --overwrite to replace it");
        OutputLocation.RequireParent(target);
    }

    /// <summary>The checkpoint's dtype: that of most of its float tensors (norms are sometimes kept in fp32).</summary>
    static ScalarType StoredDType(CheckpointReader reader) =>
        reader.Names.Select(reader.Info)
            .Where(i => i.DType is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16)
            .GroupBy(i => i.DType).OrderByDescending(g => g.Sum(i => i.NumElements)).Select(g => g.Key)
            .DefaultIfEmpty(ScalarType.Float32).First();
}
