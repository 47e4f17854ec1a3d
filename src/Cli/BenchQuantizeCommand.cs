using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using QLoraNet.Models;
using QLoraNet.Quant;
using QLoraNet.Quant.Gptq;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// `bench quantize`: how long quantizing one decoder layer of a given shape takes in a base format (random normal
/// weights of std 0.02, bf16, on the device; the time of the layer's linears only, after one warm-up layer), and
/// the whole model's time extrapolated by the layer count. The 7B figure of docs/QUANTIZATION.md (HQQ's "a 7B model
/// quantized in minutes") comes from here. Prints one JSON line.
/// GPTQ (a calibrated format) is timed as its solver and packing alone, from a Hessian 2 X^T X / T of random normal
/// inputs X (T = 2 x in tokens, made once per input width, not timed): the calibration forwards are not in the figure.
/// <c>--gptq-columns</c> picks the solver's in-block column loop (host loop or torch ops on the device) to compare them.
/// </summary>
public static class BenchQuantizeCommand
{
    public static Command Create(TextWriter stdout)
    {
        var format = new Option<string>("--quantization") { Description = $"base format: {BaseFormats.Syntax}", DefaultValueFactory = _ => "hqq4" };
        var hidden = new Option<int>("--hidden") { Description = "hidden size (Llama-2-7B: 4096)", DefaultValueFactory = _ => 4096 };
        var intermediate = new Option<int>("--intermediate") { Description = "MLP width (Llama-2-7B: 11008)", DefaultValueFactory = _ => 11008 };
        var layers = new Option<int>("--layers") { Description = "layers to extrapolate to (Llama-2-7B: 32)", DefaultValueFactory = _ => 32 };
        var device = new Option<string>("--device") { Description = "cpu | cuda | auto", DefaultValueFactory = _ => "auto" };
        var repeats = new Option<int>("--repeats") { Description = "timed layers (the median is reported)", DefaultValueFactory = _ => 1 };
        var columns = new Option<string>("--gptq-columns") { Description = "GPTQ's in-block column loop: auto (host on the CPU, torch ops on CUDA) | host | device", DefaultValueFactory = _ => "auto" };
        columns.AcceptOnlyFromAmong("auto", "host", "device");
        var cmd = new Command("quantize", "time quantizing one decoder layer in a base format, extrapolated to the model");
        foreach (var o in new Option[] { format, hidden, intermediate, layers, device, repeats, columns }) cmd.Options.Add(o);
        cmd.SetAction(pr =>
        {
            LibTorchProbe.EnsureLoaded();
            var spec = ModelOptions.ParseFormat(pr.GetValue(format)!, "--quantization");
            var dev = DeviceChoice.Resolve(pr.GetValue(device)!, "--device");
            int h = pr.GetValue(hidden), i = pr.GetValue(intermediate);
            if (h <= 0 || i <= 0 || pr.GetValue(layers) <= 0 || pr.GetValue(repeats) <= 0)
                throw new ArgumentException("--hidden, --intermediate, --layers and --repeats must be positive");
            long[][] shapes = [[h, h], [h, h], [h, h], [h, h], [i, h], [i, h], [h, i]];   // q, k, v, o, gate, up, down
            var kernels = KernelChoice.For(dev);
            var generator = new Generator(1);
            bool? onHost = pr.GetValue(columns) switch { "host" => true, "device" => false, _ => null };
            var hessians = new Dictionary<long, Tensor>();
            Tensor Hessian(long inFeatures)
            {
                if (hessians.TryGetValue(inFeatures, out var known)) return known;
                using var scope = NewDisposeScope();
                var x = randn([2 * inFeatures, inFeatures], generator: generator).to(dev);   // (T, in)
                var hessian = x.t().matmul(x).mul_(1.0 / inFeatures).DetachFromDisposeScope();   // kept across layers, disposed at the end
                return hessians[inFeatures] = hessian;
            }
            FrozenLinear Quantize(Tensor w) => spec is GptqFormat gptq
                ? new GptqLinear(Solved(gptq, w), ScalarType.BFloat16)
                : spec.Create(w, ScalarType.BFloat16, kernels, "w");
            GptqWeight Solved(GptqFormat gptq, Tensor w)
            {
                using var solution = GptqSolver.Solve(w, Hessian(w.shape[1]), gptq, GptqSolver.DefaultPercDamp, GptqSolver.DefaultBlockSize, "w", onHost);
                return GptqWeight.FromCodes(gptq, solution.Codes, solution.Scales, solution.Zeros, solution.GIdx, w.dtype);
            }
            double Layer()
            {
                double seconds = 0;
                foreach (var shape in shapes)
                {
                    using var scope = NewDisposeScope();
                    var w = (randn(shape, generator: generator) * 0.02).to(ScalarType.BFloat16).to(dev);
                    if (spec is GptqFormat) Hessian(shape[1]);
                    if (dev.type == DeviceType.CUDA) cuda.synchronize(dev);
                    var clock = Stopwatch.StartNew();
                    using var linear = Quantize(w);
                    if (dev.type == DeviceType.CUDA) cuda.synchronize(dev);
                    seconds += clock.Elapsed.TotalSeconds;
                }
                return seconds;
            }
            Layer();   // warm-up: first-use costs (kernels, allocator) are not the format's
            var times = Enumerable.Range(0, pr.GetValue(repeats)).Select(_ => Layer()).Order().ToList();
            double layer = times[times.Count / 2];
            string gptqColumns = spec is GptqFormat ? $", \"gptq_columns\": \"{pr.GetValue(columns)}\"" : "";
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{{\"quantization\": \"{spec}\", \"device\": \"{dev}\", \"hidden\": {h}, \"intermediate\": {i}, \"layer_s\": {layer:F3}, \"layers\": {pr.GetValue(layers)}, \"model_s\": {layer * pr.GetValue(layers):F1}, \"threads\": {get_num_threads()}{gptqColumns}}}"));
            foreach (var hessian in hessians.Values) hessian.Dispose();
            return 0;
        });
        return cmd;
    }
}
