using System.CommandLine;
using QLoraNet.Models;
using QLoraNet.Quant;

namespace QLoraNet.Cli;

/// <summary>
/// `quantize`: writes a Hugging Face Llama directory with its decoder projections stored in NF4/FP4 under the
/// tensor names bitsandbytes uses (<see cref="QuantizedCheckpoint"/>), so later loads skip quantization and read
/// the codes; embeddings, norms and the output head are copied as they are.
/// </summary>
public static class QuantizeCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face Llama directory with float weights", Required = true };
        var method = new Option<string>("--method") { Description = "4-bit data type: nf4 | fp4", DefaultValueFactory = _ => "nf4" };
        var doubleQuant = new Option<bool>("--double-quant") { Description = "quantize the block scales too (QLoRA double quantization, 256 per nested block)" };
        var blockSize = new Option<int>("--blocksize") { Description = "weights per block (a power of two; transformers loads 64 only)", DefaultValueFactory = _ => 64 };
        var output = new Option<string>("--out") { Description = "output directory", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "replace --out if it exists and is not empty" };
        method.AcceptOnlyFromAmong("nf4", "fp4");
        var cmd = new Command("quantize", "store a Llama checkpoint's decoder linears in bitsandbytes NF4/FP4");
        foreach (var o in new Option[] { model, method, doubleQuant, blockSize, output, overwrite }) cmd.Options.Add(o);
        cmd.SetAction(parsed =>
        {
            int block = parsed.GetValue(blockSize);
            if (block < 2 || (block & (block - 1)) != 0) throw new ArgumentException($"--blocksize {block} is not a power of two >= 2");
            string dir = parsed.GetValue(model)!;
            if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"model directory '{dir}' does not exist");
            var spec = new FourBitSpec(parsed.GetValue(method) == "fp4" ? FourBitType.Fp4 : FourBitType.Nf4, block, parsed.GetValue(doubleQuant));
            LibTorchProbe.EnsureLoaded();
            string outDir = parsed.GetValue(output)!;
            var summary = QuantizedCheckpoint.Write(dir, outDir, spec, parsed.GetValue(overwrite));
            stdout.WriteLine($"wrote {outDir}: {summary.QuantizedTensors} linears in {spec}, {summary.CopiedTensors} tensors copied, "
                + $"{summary.Files.Count} safetensors file(s), {summary.Bytes / 1e6:F1} MB");
            return 0;
        });
        return cmd;
    }
}
