using System.CommandLine;
using System.Diagnostics;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Models.Calibration;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// `quantize`: writes a Hugging Face model directory with its decoder linears stored in a base format that has a
/// checkpoint layout, so later loads skip quantization and read the codes; embeddings and the output head are copied
/// as they are. nf4/fp4 and llm-int8 use bitsandbytes' tensor names, hqq hqq's, ternary BitNet's
/// (<see cref="QuantizedCheckpoint.Write"/>); the calibrated formats (gptq, awq4, smoothquant) are made layer by layer
/// from <c>--calibration</c> data (<see cref="CalibratedLoader"/>) and written in AutoGPTQ's, AutoAWQ's or
/// compressed-tensors' layout (<see cref="QuantizedCheckpoint.WriteModel"/>), with the norms AWQ and SmoothQuant
/// rescale. The format is spelled as everywhere else (<c>--quantization nf4-dq</c>); the older
/// <c>--method/--double-quant/--blocksize</c> flags still work and spell the same value.
/// </summary>
public static class QuantizeCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model directory with float weights", Required = true };
        var format = new Option<string?>("--quantization") { Description = "base format to store (default nf4): nf4|fp4[-b<N>][-dq] (bitsandbytes 4-bit), llm-int8[-t<T>] (bitsandbytes 8-bit), hqq2|3|4|8[-g<N>] (hqq), ternary (BitNet b1.58), or a calibrated one (needs --calibration): gptq2|3|4|8[-g<N>][-act], awq4[-g<N>][-noclip], smoothquant[-a<alpha>]" };
        var method = new Option<string?>("--method") { Description = "(older spelling) 4-bit data type nf4 | fp4; prefer --quantization" };
        var doubleQuant = new Option<bool>("--double-quant") { Description = "(older spelling) add -dq; prefer --quantization nf4-dq" };
        var blockSize = new Option<int?>("--blocksize") { Description = "(older spelling) add -b<N>; prefer --quantization nf4-b128" };
        var output = new Option<string>("--out") { Description = "output directory", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "replace --out if it exists and is not empty" };
        var device = new Option<string>("--device") { Description = "where calibrated formats run: cpu | cuda | auto", DefaultValueFactory = _ => "auto" };
        var dtype = new Option<string?>("--dtype") { Description = "activation dtype while calibrating: fp32 | bf16 (default: fp32 on cpu, bf16 on cuda)" };
        device.AcceptOnlyFromAmong(DeviceChoice.Names);
        dtype.AcceptOnlyFromAmong("fp32", "bf16");
        var calibration = new CalibrationOptions();
        var cmd = new Command("quantize", "store a model's decoder linears pre-quantized (bitsandbytes 4-/8-bit, hqq or BitNet layout, or calibrated GPTQ, AWQ, SmoothQuant W8A8)");
        foreach (var o in new Option[] { model, format, method, doubleQuant, blockSize, output, overwrite, device, dtype }.Concat(calibration.All)) cmd.Options.Add(o);
        cmd.SetAction(parsed =>
        {
            var spec = Format(parsed.GetValue(format), parsed.GetValue(method), parsed.GetValue(doubleQuant), parsed.GetValue(blockSize));
            if (spec.Layout is null)
                throw new ArgumentException($"--quantization {spec}: no checkpoint layout stores it; `quantize` writes {string.Join(", ", BaseFormats.Layouts.Select(l => l.Name))}; {spec} is applied on load instead");
            string dir = parsed.GetValue(model)!;
            if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"model directory '{dir}' does not exist");
            if (spec.NeedsCalibration && parsed.GetValue(calibration.Data) is null)
                throw new ArgumentException($"--quantization {spec} is made from activations: give --calibration FILE (a .jsonl/.csv dataset, a text file, or train:CONFIG)");
            if (!spec.NeedsCalibration && parsed.GetValue(calibration.Data) is not null)
                throw new ArgumentException($"--calibration applies to calibrated formats (gptq, awq4, smoothquant); {spec} quantizes each weight alone");
            LibTorchProbe.EnsureLoaded();
            string outDir = parsed.GetValue(output)!;
            QuantizedCheckpoint.Summary summary;
            var clock = Stopwatch.StartNew();
            if (spec.NeedsCalibration)
            {
                var onDevice = DeviceChoice.Resolve(parsed.GetValue(device)!, "--device");
                var compute = ModelOptions.ResolveDType(parsed.GetValue(dtype), onDevice);
                var arch = ModelFamilies.Load(dir);
                var set = calibration.Build(parsed, spec, TextTokenizers.Load(dir), dir)!;
                zeros(1).Dispose();                     // map libtorch before the peak is reset
                bool peakReset = HostMemory.ResetPeak();
                long? before = HostMemory.ResidentBytes;
                var reporter = new CalibrationReporter(parsed.InvocationConfiguration.Error, onDevice);
                var kernels = KernelChoice.For(onDevice);
                var load = new LoadOptions(onDevice, compute,
                    LinearPolicies.Quantized(arch, new DenseFormat(null), compute, onDevice, ScalarType.Float32, kernels), ScalarType.Float32, kernels);
                using (var quantized = CalibratedLoader.Load(dir, spec, set, load, reporter.Report))
                {
                    double calibrationSeconds = clock.Elapsed.TotalSeconds;
                    summary = QuantizedCheckpoint.WriteModel(dir, outDir, spec, quantized, parsed.GetValue(overwrite));
                    string peak = peakReset && HostMemory.PeakResidentBytes is { } p && before is { } b
                        ? $"host peak RSS {p / 1048576.0:F0} MiB ({(p - b) / 1048576.0:F0} MiB above the start)" : "host peak not measured";
                    stdout.WriteLine($"calibrated {arch.NumLayers} layers in {calibrationSeconds:F1} s ({set.Samples} x {set.SequenceLength} tokens on {onDevice.type.ToString().ToLowerInvariant()}); {peak}"
                        + (reporter.DeviceMaxMiB is { } d ? $"; device used peak {d:F0} MiB" : ""));
                }
            }
            else summary = QuantizedCheckpoint.Write(dir, outDir, spec, parsed.GetValue(overwrite));
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
