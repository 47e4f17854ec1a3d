using System.CommandLine;
using System.Diagnostics;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// `bench kernel`: the fused 4-bit dequantization kernel against the torch-op reference on the GPU: bit-for-bit
/// parity on random codes and scales, then throughput (bytes read + written) next to a device-to-device copy
/// measured in the same run.
/// </summary>
public static class BenchKernelCommand
{
    public static Command Create(TextWriter stdout)
    {
        var iters = new Option<int>("--iters") { Description = "timed iterations per measurement", DefaultValueFactory = _ => 50 };
        var cmd = new Command("kernel", "parity and throughput of the fused NF4 (+double quant) dequantization kernel (CUDA)");
        cmd.Options.Add(iters);
        cmd.SetAction(pr =>
        {
            LibTorchProbe.EnsureLoaded();
            if (!torch.cuda.is_available()) throw new InvalidOperationException("bench kernel needs a CUDA device (build with -p:TorchBackend=system on a GPU machine)");
            Run(stdout, pr.GetValue(iters));
            return 0;
        });
        return cmd;
    }

    static void Run(TextWriter o, int iters)
    {
        var dev = torch.CUDA;
        var kernels = KernelChoice.For(dev);
        o.WriteLine(kernels.Report()[0]);
        if (kernels.FourBitDequant != FourBitDequantPath.CudaPtx) throw new InvalidOperationException("the fused kernel does not run here: " + kernels.FourBitDequantReason);
        // The bench's own random stream, not torch's process-wide one. A CPU generator: TorchSharp 0.107 creates every
        // Generator on the CPU (see Models.RandomStream), so weights are drawn there and moved.
        using var rng = new torch.Generator(0);
        double copyGbs = CopyBandwidth(dev, iters);
        o.WriteLine($"device-to-device copy: {copyGbs:F0} GB/s (bytes read + written)");
        o.WriteLine("shape          dq  dtype  parity  kernel_us  kernel_GB/s  %copy  torch_us  torch_GB/s  speedup");
        foreach (var (rows, cols) in new[] { (4096L, 4096L), (11008L, 4096L), (4096L, 11008L) })
            foreach (bool dq in new[] { true, false })
                foreach (var dtype in new[] { ScalarType.BFloat16, ScalarType.Float32 })
                {
                    using var scope = torch.NewDisposeScope();
                    long n = rows * cols, nb = n / 64;
                    // A real quantized weight (random normal values, quantized on the GPU) so every code and scale occurs.
                    var w = FourBitWeight.Quantize(torch.randn(new[] { rows, cols }, ScalarType.BFloat16, generator: rng).to(dev), FourBitType.Nf4, 64, dq);
                    var reference = w.DequantizeWithTorchOps(dtype);
                    var fast = kernels.Dequantize(w, dtype);
                    bool same = reference.eq(fast).all().item<bool>();
                    double kUs = Time(iters, () => kernels.Dequantize(w, dtype).Dispose());
                    double tUs = Time(Math.Max(3, iters / 5), () => w.DequantizeWithTorchOps(dtype).Dispose());
                    long bytes = n / 2 + (dq ? nb : nb * 4) + n * (dtype == ScalarType.BFloat16 ? 2 : 4);
                    double kGbs = bytes / kUs / 1e3, tGbs = bytes / tUs / 1e3;
                    o.WriteLine($"{rows}x{cols,-8} {(dq ? "yes" : "no "),-3} {(dtype == ScalarType.BFloat16 ? "bf16" : "fp32"),-6} {(same ? "exact" : "DIFF"),-7} {kUs,9:F1}  {kGbs,11:F0}  {100 * kGbs / copyGbs,5:F0}  {tUs,8:F1}  {tGbs,10:F0}  {tUs / kUs,6:F1}x");
                    if (!same) throw new InvalidOperationException("kernel output differs from the torch-op reference");
                }
    }

    static double CopyBandwidth(Device dev, int iters)
    {
        using var src = torch.empty(new long[] { 1L << 29 }, ScalarType.Float16, dev).uniform_(0, 1); // 1 GiB
        using var dst = torch.empty_like(src);
        double us = Time(Math.Max(5, iters / 2), () => dst.copy_(src));
        return 2.0 * src.numel() * 2 / us / 1e3;
    }

    static double Time(int iters, Action a)
    {
        for (int i = 0; i < 3; i++) a();
        torch.cuda.synchronize();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < iters; i++) a();
        torch.cuda.synchronize();
        return sw.Elapsed.TotalMilliseconds * 1000 / iters;
    }
}
