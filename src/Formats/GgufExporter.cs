using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>What an export wrote: one line per tensor (name, source shape, ggml type) and any fallbacks.</summary>
public sealed record GgufExportSummary(string Path, long FileBytes, IReadOnlyList<GgufTensorSpec> Tensors, IReadOnlyList<string> Warnings);

/// <summary>
/// Exports a Hugging Face checkpoint directory (config.json, safetensors, tokenizer.model or tokenizer.json) to one
/// GGUF v3 file that llama.cpp loads as the family's architecture (<see cref="GgufArchitectures"/>: <c>llama</c>,
/// <c>qwen2</c>, <c>gemma</c>, <c>gemma2</c>). Tensors stream from the checkpoint one at a time: read, optionally
/// transformed (the LoRA-merge hook of <see cref="CheckpointTensors.Stream"/>), converted as the architecture needs
/// (<see cref="IGgufArchitecture.Convert"/>: RoPE permutation, Gemma's norm offset), converted to their ggml type and
/// written; peak memory stays near one tensor. What llama.cpp's architecture cannot compute is refused by name
/// before anything is written.
/// </summary>
public static class GgufExporter
{
    /// <summary>Rows are quantized this many values at a time, bounding the float32 working copies.</summary>
    const long ChunkValues = 1 << 22;

    public static GgufExportSummary Export(string modelDir, string outPath, GgufExportType type, bool overwrite = false,
        Func<string, Tensor, Tensor>? transform = null)
    {
        var arch = ModelFamilies.Load(modelDir);
        var architecture = GgufArchitectures.For(arch, modelDir);
        var warnings = new List<string>();
        try { warnings.AddRange(architecture.Check(arch)); }
        catch (NotSupportedException e) { throw new NotSupportedException($"{modelDir}: {e.Message}"); }
        IGgufVocab vocab = SentencePieceModel.Find(modelDir) != null
            ? GgufLlamaVocab.Load(modelDir, arch.VocabSize)
            : GgufBpeVocab.Load(modelDir, arch.VocabSize);
        var names = new GgufTensorNames(arch);
        using var reader = CheckpointReader.Open(modelDir);

        var sources = new List<(SourceTensor Source, GgufTensorSpec Spec)>();
        var mapped = CheckpointTensors.Stream(reader, transform)
            .Where(s => architecture.Loads(s.Name, arch))
            .Select(s => (Source: s, Name: names.Map(s.Name)))
            .Where(x => x.Name != null).ToList();
        bool hasOutput = mapped.Any(x => x.Name == GgufTensorNames.Output);
        foreach (var (source, ggufName) in mapped)
        {
            var ggmlType = GgufTypePolicy.Choose(ggufName!, source.Shape, type, hasOutput, out var warning);
            if (warning != null) warnings.Add(warning);
            sources.Add((source, new GgufTensorSpec(ggufName!, source.Shape, ggmlType)));
        }
        CheckComplete(modelDir, arch, names, sources.Select(s => s.Spec.Name).ToHashSet(), hasOutput || !architecture.Loads(arch.HeadWeight, arch));
        var extra = architecture.ExtraTensors(arch).ToList();

        string modelName = new DirectoryInfo(Path.GetFullPath(modelDir)).Name;
        var metadata = GgufMetadata.Build(arch, architecture, vocab, modelName, type);
        var bySpec = sources.ToDictionary(s => s.Spec.Name, s => s.Source);
        var extraByName = extra.ToDictionary(e => e.Name, e => e.Values);
        var specs = sources.Select(s => s.Spec)
            .Concat(extra.Select(e => new GgufTensorSpec(e.Name, [e.Values.Length], GgmlType.F32))).ToList();
        GgufWriter.Write(outPath, metadata, specs, (spec, stream) =>
        {
            if (extraByName.TryGetValue(spec.Name, out var values)) WriteRaw(tensor(values), stream);
            else WriteTensor(spec, bySpec[spec.Name], arch, architecture, stream);
        }, overwrite);
        return new GgufExportSummary(outPath, new FileInfo(outPath).Length, specs, warnings);
    }

    static void CheckComplete(string modelDir, ModelArchitecture arch, GgufTensorNames names, HashSet<string> present, bool hasOutput)
    {
        var missing = names.Required.Where(n => !present.Contains(n)).ToList();
        if (missing.Count > 0)
            throw new InvalidDataException($"{modelDir}: the checkpoint lacks {missing.Count} tensor(s) llama.cpp needs, first '{missing[0]}' (GGUF name)");
        if (!hasOutput && !arch.TiedHead)
            throw new InvalidDataException($"{modelDir}: no {arch.HeadWeight} and tie_word_embeddings is false in config.json");
    }

    static void WriteTensor(GgufTensorSpec spec, SourceTensor source, ModelArchitecture arch, IGgufArchitecture architecture, Stream output)
    {
        using var scope = NewDisposeScope();
        var weight = architecture.Convert(spec.Name, source.Produce(), arch);

        switch (spec.Type)
        {
            case GgmlType.F32: WriteRaw(weight.to(ScalarType.Float32), output); break;
            case GgmlType.F16: WriteRaw(weight.to(ScalarType.Float16), output); break;
            case GgmlType.Q8_0: WriteBlocks(weight, output, GgufQ8_0.Quantize); break;
            case GgmlType.Q4_0: WriteBlocks(weight, output, GgufQ4_0.Quantize); break;
            default: throw new NotSupportedException($"{spec.Name}: writing {spec.Type} is not implemented");
        }
    }

    static void WriteRaw(Tensor t, Stream output)
    {
        using var c = t.cpu().contiguous();
        NativeTensorMemory.ForEachChunk(c, chunk => output.Write(chunk));
    }

    /// <summary>Quantizes a few rows at a time: (rows, rowLength) → blocks, in row order.</summary>
    static void WriteBlocks(Tensor weight, Stream output, Func<Tensor, GgmlBlocks> quantize)
    {
        long rowLength = weight.shape[^1];
        var rows = weight.reshape(-1, rowLength);                          // (rows, rowLength)
        long chunkRows = Math.Max(1, ChunkValues / rowLength);
        for (long r = 0; r < rows.shape[0]; r += chunkRows)
        {
            using var chunk = rows.narrow(0, r, Math.Min(chunkRows, rows.shape[0] - r));
            output.Write(quantize(chunk).Bytes.Span);
        }
    }
}
