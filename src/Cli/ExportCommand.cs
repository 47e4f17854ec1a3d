using System.CommandLine;
using QLoraNet.Formats;
using QLoraNet.Peft;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// `export`: writes a Hugging Face Llama checkpoint as one GGUF v3 file for llama.cpp (f16, q8_0 or q4_0 weights),
/// streaming tensor by tensor. Which tensors keep which type is documented on <see cref="GgufTypePolicy"/>.
/// With <c>--adapter</c>, a peft LoRA adapter is folded into each base weight as it streams past
/// (W + scaling·B·A in fp32, <see cref="AdapterMerge"/>, the same fold `merge` writes), so the GGUF holds the fine-tuned model.
/// </summary>
public static class ExportCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face Llama directory (config.json, *.safetensors, tokenizer.model)", Required = true };
        var format = new Option<string>("--format") { Description = "output format: gguf", DefaultValueFactory = _ => "gguf" };
        var type = new Option<string>("--type") { Description = "weight type: f16, q8_0 or q4_0 (norms stay f32)", DefaultValueFactory = _ => "f16" };
        var output = new Option<string>("--out") { Description = "output file, e.g. model.gguf", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "replace --out if it exists" };
        var adapter = new Option<string?>("--adapter") { Description = "peft LoRA adapter directory to merge into the weights first" };
        var baseFormat = new Option<string?>("--base") { Description = "with --adapter: base format the adapter was trained on (QLoRA: nf4-dq); W is quantized and dequantized in it before B·A is added, as merge --base. Default: the adapter's qloranet.json, else none" };
        var cmd = new Command("export", "export a checkpoint (llama, mistral, qwen2, gemma, gemma2) to GGUF for llama.cpp");
        foreach (var o in new Option[] { model, format, type, output, overwrite, adapter, baseFormat }) cmd.Options.Add(o);
        cmd.SetAction(pr =>
        {
            string fmt = pr.GetValue(format)!;
            if (!fmt.Equals("gguf", StringComparison.OrdinalIgnoreCase))
                throw new ArgumentException($"--format '{fmt}' is not supported; use gguf");
            var exportType = GgufTypePolicy.Parse(pr.GetValue(type)!);
            string outPath = pr.GetValue(output)!;
            bool replace = pr.GetValue(overwrite);
            CheckOutput(outPath, replace);
            LibTorchProbe.EnsureLoaded();

            string? adapterDir = pr.GetValue(adapter);
            if (adapterDir is null && pr.GetValue(baseFormat) is not null) throw new ArgumentException("--base applies to an --adapter; give one or omit --base");
            var trainedOn = adapterDir is null ? null : AdapterBase.Resolve(pr, baseFormat, adapterDir, "none");
            using var checkpoint = adapterDir is null ? null : CheckpointReader.Open(pr.GetValue(model)!);
            using var merge = adapterDir is null ? null : AdapterMerge.Open(adapterDir, checkpoint!, ModelFamilies.Load(pr.GetValue(model)!), trainedOn);
            var summary = GgufExporter.Export(pr.GetValue(model)!, outPath, exportType, replace, merge is null ? null : merge.Apply);
            if (merge != null) stdout.WriteLine($"merged {merge.MergedCount} LoRA modules from {adapterDir} (base {merge.BaseFormat})");
            foreach (var w in summary.Warnings) stdout.WriteLine($"warning: {w}");
            var counts = summary.Tensors.GroupBy(t => t.Type).OrderBy(g => g.Key).Select(g => $"{g.Count()} {GgmlTypes.Name(g.Key)}");
            stdout.WriteLine($"wrote {outPath}: {summary.Tensors.Count} tensors ({string.Join(", ", counts)}), {summary.FileBytes / 1e6:F1} MB");
            return 0;
        });
        return cmd;
    }

    /// <summary>Fails before any work when the output cannot be written: the export itself may take minutes.</summary>
    static void CheckOutput(string outPath, bool overwrite)
    {
        if (Directory.Exists(outPath)) throw new IOException($"--out '{outPath}' is a directory; give a file name such as model.gguf");
        OutputLocation.RequireParent(outPath);
        string dir = Path.GetDirectoryName(Path.GetFullPath(outPath))!;
        if (File.Exists(outPath) && !overwrite) throw new IOException($"{outPath} already exists; pass --overwrite to replace it");
        string probe = Path.Combine(dir, AtomicFile.TemporaryName(Path.GetFileName(outPath)));
        try
        {
            using (new FileStream(probe, FileMode.Create, FileAccess.Write, FileShare.None)) { }
            File.Delete(probe);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            throw new IOException($"--out '{outPath}' is not writable ({e.Message})");
        }
    }
}
