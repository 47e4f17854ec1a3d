using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>`generate`: continue a prompt with a Hugging Face Llama directory (greedy or temperature/top-p sampling).</summary>
public static class GenerateCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model directory (config.json, *.safetensors, tokenizer.model)", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "text to continue", Required = true };
        var maxNewTokens = new Option<int>("--max-new-tokens") { Description = "stop after this many new tokens", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy; otherwise sample from softmax(logits / T)", DefaultValueFactory = _ => 0.0 };
        var topP = new Option<double>("--top-p") { Description = "nucleus sampling: sample among the most likely tokens holding this much probability", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<ulong>("--seed") { Description = "seed of the sampling generator", DefaultValueFactory = _ => 0UL };
        var json = new Option<bool>("--json") { Description = "print {\"input_ids\", \"output_ids\", \"text\"} as one JSON line" };
        var device = new Option<string>("--device") { Description = "cpu | cuda | auto (cuda when available)", DefaultValueFactory = _ => "auto" };
        device.AcceptOnlyFromAmong("cpu", "cuda", "auto");
        var dtype = new Option<string?>("--dtype") { Description = "compute dtype fp32 | bf16 (default: fp32 on cpu, bf16 on cuda)" };
        dtype.AcceptOnlyFromAmong("fp32", "bf16");

        var cmd = new Command("generate", "continue a prompt with a Llama model");
        foreach (var o in new Option[] { model, prompt, maxNewTokens, temperature, topP, seed, json, device, dtype }) cmd.Options.Add(o);
        cmd.SetAction(parsed =>
        {
            LibTorchProbe.EnsureLoaded();
            string dir = parsed.GetValue(model)!;
            if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"model directory '{dir}' does not exist");
            var options = new GenerationOptions(parsed.GetValue(maxNewTokens), parsed.GetValue(temperature), parsed.GetValue(topP), parsed.GetValue(seed)).Validated();
            var dev = ResolveDevice(parsed.GetValue(device)!);
            var compute = ResolveDType(parsed.GetValue(dtype), dev);

            // Tokenizer first: it is cheap, and a missing tokenizer.model should not wait for the weights.
            var tokenizer = LlamaTextTokenizer.Load(dir);
            var config = LlamaConfig.Load(dir);
            // Hook for --quantization: choose another factory here. Hook for --adapter: wrap the loaded model's
            // projections with LoRA right after Load.
            using var llama = LlamaLoader.Load(dir, new LoadOptions(dev, compute, DenseFactory(compute)));

            var inputIds = tokenizer.Encode(parsed.GetValue(prompt)!);
            var stopIds = config.EosTokenIds.Append(tokenizer.EosId).Distinct().ToList();
            var outputIds = TextGenerator.Generate(llama, inputIds, options with { StopIds = stopIds });

            if (parsed.GetValue(json))
                stdout.WriteLine(Json(inputIds, outputIds, tokenizer.Decode(outputIds)));
            else
                stdout.WriteLine(tokenizer.Decode(inputIds.Concat(outputIds)));
            return 0;
        });
        return cmd;
    }

    static Func<string, Tensor, FrozenLinear> DenseFactory(ScalarType compute) => (_, weight) => new DenseFrozenLinear(weight, compute);

    /// <summary>"auto" picks CUDA when libtorch sees a GPU: the only place that asks.</summary>
    internal static Device ResolveDevice(string name) => name switch
    {
        "cpu" => CPU,
        "cuda" when !cuda.is_available() => throw new InvalidOperationException("--device cuda: no CUDA device is visible to libtorch (use --device cpu, or build with a CUDA backend)"),
        "cuda" => CUDA,
        _ => cuda.is_available() ? CUDA : CPU,
    };

    /// <summary>fp32 on CPU (exact and fast enough for small models), bf16 on CUDA (half the memory, tensor cores).</summary>
    internal static ScalarType ResolveDType(string? name, Device device) => name switch
    {
        "fp32" => ScalarType.Float32,
        "bf16" => ScalarType.BFloat16,
        _ => device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32,
    };

    /// <summary>One line in the layout of Python's json.dumps: {"input_ids": [...], "output_ids": [...], "text": "..."}.</summary>
    static string Json(IEnumerable<int> inputIds, IEnumerable<int> outputIds, string text)
    {
        var encoder = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        return $"{{\"input_ids\": [{string.Join(", ", inputIds)}], \"output_ids\": [{string.Join(", ", outputIds)}], \"text\": {JsonSerializer.Serialize(text, encoder)}}}";
    }
}
