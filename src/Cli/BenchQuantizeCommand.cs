using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using QLoraNet.Models;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// `bench quantize`: how long quantizing one decoder layer of a given shape takes in a base format (random normal
/// weights of std 0.02, bf16, on the device; the time of the layer's linears only, after one warm-up layer), and
/// the whole model's time extrapolated by the layer count. The 7B figure of docs/QUANTIZATION.md (HQQ's "a 7B model
/// quantized in minutes") comes from here. Prints one JSON line.
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
        var cmd = new Command("quantize", "time quantizing one decoder layer in a base format, extrapolated to the model");
        foreach (var o in new Option[] { format, hidden, intermediate, layers, device, repeats }) cmd.Options.Add(o);
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
            double Layer()
            {
                double seconds = 0;
                foreach (var shape in shapes)
                {
                    using var scope = NewDisposeScope();
                    var w = (randn(shape, generator: generator) * 0.02).to(ScalarType.BFloat16).to(dev);
                    if (dev.type == DeviceType.CUDA) cuda.synchronize(dev);
                    var clock = Stopwatch.StartNew();
                    using var linear = spec.Create(w, ScalarType.BFloat16, kernels, "w");
                    if (dev.type == DeviceType.CUDA) cuda.synchronize(dev);
                    seconds += clock.Elapsed.TotalSeconds;
                }
                return seconds;
            }
            Layer();   // warm-up: first-use costs (kernels, allocator) are not the format's
            var times = Enumerable.Range(0, pr.GetValue(repeats)).Select(_ => Layer()).Order().ToList();
            double layer = times[times.Count / 2];
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{{\"quantization\": \"{spec}\", \"device\": \"{dev}\", \"hidden\": {h}, \"intermediate\": {i}, \"layer_s\": {layer:F3}, \"layers\": {pr.GetValue(layers)}, \"model_s\": {layer * pr.GetValue(layers):F1}, \"threads\": {get_num_threads()}}}"));
            return 0;
        });
        return cmd;
    }
}
