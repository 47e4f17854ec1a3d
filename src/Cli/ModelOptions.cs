using System.CommandLine;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
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
    public Option<string> Quantization { get; } = new("--quantization") { Description = "base format of the linears, quantized on load: none | nf4[-dq] | fp4[-dq] | int8 | int4[-g64] | bf16 ... (see docs/QUANTIZATION.md); a pre-quantized directory loads as stored", DefaultValueFactory = _ => "none" };
    public Option<string?> Adapter { get; } = new("--adapter") { Description = "peft LoRA adapter directory to apply (unmerged)" };
    public Option<bool> AllowNonFinite { get; } = new("--allow-non-finite-weights") { Description = "load weights holding NaN/Inf instead of refusing them (to inspect a diverged or damaged checkpoint)" };

    public ModelOptions()
    {
        Device.AcceptOnlyFromAmong(DeviceChoice.Names);
        DType.AcceptOnlyFromAmong("fp32", "bf16");
    }

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { Model, Device, DType, Quantization, Adapter, AllowNonFinite }) cmd.Options.Add(o);
    }

    /// <summary>Loaded model, tokenizer and config, plus what was chosen.</summary>
    public sealed record Loaded(LlamaForCausalLM Model, LlamaTextTokenizer Tokenizer, LlamaConfig Config, Device Device,
        ScalarType ComputeDType, QuantSpec Format, AdapterConfig? Adapter) : IDisposable
    {
        public void Dispose() => Model.Dispose();
    }

    public Loaded Load(ParseResult parsed)
    {
        LibTorchProbe.EnsureLoaded();
        string dir = parsed.GetValue(Model)!;
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"model directory '{dir}' does not exist");
        var device = DeviceChoice.Resolve(parsed.GetValue(Device)!, "--device");
        var compute = ResolveDType(parsed.GetValue(DType), device);
        var format = QuantSpec.Parse(parsed.GetValue(Quantization)!);
        string? adapterDir = parsed.GetValue(Adapter);
        if (adapterDir != null && !Directory.Exists(adapterDir)) throw new DirectoryNotFoundException($"--adapter: adapter directory '{adapterDir}' does not exist");

        // Tokenizer and config first: cheap, and their errors should not wait for the weights.
        var tokenizer = LlamaTextTokenizer.Load(dir);
        var config = LlamaConfig.Load(dir);
        var adapterConfig = adapterDir is null ? null : AdapterConfig.Load(adapterDir);
        QuantizedCheckpoint.RequireCompatible(dir, format); // a `quantize` output keeps its stored format
        var headDType = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : compute;
        bool allowNonFinite = parsed.GetValue(AllowNonFinite);
        var model = LlamaLoader.Load(dir, new LoadOptions(device, compute, LinearPolicies.Quantized(format, compute, device, headDType),
            AllowNonFiniteWeights: allowNonFinite));
        try
        {
            if (adapterDir != null) AdapterFiles.ApplyAndLoad(adapterDir, model, allowNonFinite);
            model.eval();
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return new Loaded(model, tokenizer, config, device, compute, format, adapterConfig);
    }

    /// <summary>fp32 on CPU (exact and fast enough for small models), bf16 on CUDA (half the memory, tensor cores).</summary>
    public static ScalarType ResolveDType(string? name, Device device) => name switch
    {
        "fp32" => ScalarType.Float32,
        "bf16" => ScalarType.BFloat16,
        _ => device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32,
    };
}
