using System.CommandLine;
using QLoraNet.Models;
using QLoraNet.Quant;

namespace QLoraNet.Cli;

/// <summary>
/// `quantize`: writes a Hugging Face model directory with its decoder linears stored in a base format that has a
/// checkpoint layout (nf4/fp4: the tensor names bitsandbytes uses, <see cref="QuantizedCheckpoint"/>), so later loads
/// skip quantization and read the codes; embeddings, norms and the output head are copied as they are. The format
/// is spelled as everywhere else (<c>--quantization nf4-dq</c>); the older <c>--method/--double-quant/--blocksize</c>
/// flags still work and spell the same value.
/// </summary>
public static class QuantizeCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model directory with float weights", Required = true };
        var format = new Option<string?>("--quantization") { Description = "base format to store: nf4|fp4[-b<N>][-dq] (default nf4)" };
        var method = new Option<string?>("--method") { Description = "(older spelling) 4-bit data type nf4 | fp4; prefer --quantization" };
        var doubleQuant = new Option<bool>("--double-quant") { Description = "(older spelling) add -dq; prefer --quantization nf4-dq" };
        var blockSize = new Option<int?>("--blocksize") { Description = "(older spelling) add -b<N>; prefer --quantization nf4-b128" };
        var output = new Option<string>("--out") { Description = "output directory", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "replace --out if it exists and is not empty" };
        var cmd = new Command("quantize", "store a model's decoder linears pre-quantized (bitsandbytes NF4/FP4 layout)");
        foreach (var o in new Option[] { model, format, method, doubleQuant, blockSize, output, overwrite }) cmd.Options.Add(o);
        cmd.SetAction(parsed =>
        {
            var spec = Format(parsed.GetValue(format), parsed.GetValue(method), parsed.GetValue(doubleQuant), parsed.GetValue(blockSize));
            if (spec.Layout is null)
                throw new ArgumentException($"--quantization {spec}: no checkpoint layout stores it; `quantize` writes {string.Join(", ", BaseFormats.Layouts.Select(l => l.Name))} (nf4, fp4 and their options); {spec} is applied on load instead");
            string dir = parsed.GetValue(model)!;
            if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"model directory '{dir}' does not exist");
            LibTorchProbe.EnsureLoaded();
            string outDir = parsed.GetValue(output)!;
            var summary = QuantizedCheckpoint.Write(dir, outDir, spec, parsed.GetValue(overwrite));
            stdout.WriteLine($"wrote {outDir}: {summary.QuantizedTensors} linears in {spec}, {summary.CopiedTensors} tensors copied, "
                + $"{summary.Files.Count} safetensors file(s), {summary.Bytes / 1e6:F1} MB");
            return 0;
        });
        return cmd;
    }

    /// <summary>The format from --quantization, or spelled from the older flags (the same value either way).</summary>
    static BaseFormat Format(string? spelling, string? method, bool doubleQuant, int? blockSize)
    {
        bool older = method is not null || doubleQuant || blockSize is not null;
        if (spelling is not null && older)
            throw new ArgumentException("give --quantization alone, or the older --method/--double-quant/--blocksize, not both");
        if (spelling is not null) return ModelOptions.ParseFormat(spelling, "--quantization");
        var parts = new List<string> { method ?? "nf4" };
        if (blockSize is int b) parts.Add($"b{b}");
        if (doubleQuant) parts.Add("dq");
        return ModelOptions.ParseFormat(string.Join('-', parts), "--method/--double-quant/--blocksize");
    }
}
