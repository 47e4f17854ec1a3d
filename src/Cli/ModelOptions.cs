using System.CommandLine;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// The options every inference verb shares (generate, eval, bench): which model, where, in what compute dtype,
/// with which base format (quantize-on-load) and which adapter (unmerged LoRA). One place turns them into a model.
/// </summary>
public sealed class ModelOptions
{
    public Option<string> Model { get; } = new("--model") { Description = "Hugging Face model directory (config.json, *.safetensors, tokenizer.model)", Required = true };
    public Option<string> Device { get; } = new("--device") { Description = "cpu | cuda | auto (cuda when available)", DefaultValueFactory = _ => "auto" };
    public Option<string?> DType { get; } = new("--dtype") { Description = "compute dtype fp32 | bf16 (default: fp32 on cpu, bf16 on cuda)" };
    public Option<string?> Quantization { get; } = new("--quantization") { Description = $"base format of the decoder linears, quantized on load: {BaseFormats.Syntax} (see docs/QUANTIZATION.md); default: the format the --adapter was trained on (its qloranet.json), else none; a pre-quantized directory loads as stored" };
    public Option<string?> Adapter { get; } = new("--adapter") { Description = "peft LoRA adapter directory to apply (unmerged)" };
    public Option<bool> AllowNonFinite { get; } = new("--allow-non-finite-weights") { Description = "load weights holding NaN/Inf instead of refusing them (to inspect a diverged or damaged checkpoint)" };
    public CalibrationOptions Calibration { get; } = new();

    public ModelOptions()
    {
        Device.AcceptOnlyFromAmong(DeviceChoice.Names);
        DType.AcceptOnlyFromAmong("fp32", "bf16");
    }

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { Model, Device, DType, Quantization, Adapter, AllowNonFinite }.Concat(Calibration.All)) cmd.Options.Add(o);
    }

    /// <summary>Loaded model, tokenizer and family record, plus what was chosen.</summary>
    public sealed record Loaded(LlamaForCausalLM Model, ITextTokenizer Tokenizer, ModelArchitecture Architecture, Device Device,
        ScalarType ComputeDType, BaseFormat Format, AdapterConfig? Adapter, KernelSelection Kernels, string ModelDir) : IDisposable
    {
        public void Dispose() => Model.Dispose();
    }

    public Loaded Load(ParseResult parsed)
    {
        LibTorchProbe.RequireCudaIfAsked(parsed.GetValue(Device)!, "--device");
        string dir = parsed.GetValue(Model)!;
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"model directory '{dir}' does not exist");
        var device = DeviceChoice.Resolve(parsed.GetValue(Device)!, "--device");
        var compute = ResolveDType(parsed.GetValue(DType), device);
        var format = AdapterBase.Resolve(parsed, Quantization, parsed.GetValue(Adapter), "none");
        var tokenizer = TextTokenizers.Load(dir);   // cheap, and its errors should not wait for the weights
        var calibration = Calibration.Build(parsed, format, tokenizer, dir);
        var built = ModelBuilder.Build(dir, new ModelBuildOptions(device, compute, format, KernelChoice.For(device),
            AdapterDir: parsed.GetValue(Adapter), AllowNonFiniteWeights: parsed.GetValue(AllowNonFinite),
            Calibration: calibration, CalibrationProgress: new CalibrationReporter(parsed.InvocationConfiguration.Error, device).Report));
        built.Model.eval();
        return new Loaded(built.Model, tokenizer, built.Architecture, device, compute, format, built.Adapter, built.Kernels, dir);
    }

    /// <summary>A base format from an option, or a one-line error naming the option and the spellings.</summary>
    public static BaseFormat ParseFormat(string text, string option)
    {
        try { return BaseFormat.Parse(text); }
        catch (FormatException e) { throw new FormatException($"{option}: {e.Message}"); }
    }

    /// <summary>fp32 on CPU (exact and fast enough for small models), bf16 on CUDA (half the memory, tensor cores).</summary>
    public static ScalarType ResolveDType(string? name, Device device) => name switch
    {
        "fp32" => ScalarType.Float32,
        "bf16" => ScalarType.BFloat16,
        _ => device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32,
    };
}
