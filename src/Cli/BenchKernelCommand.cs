using System.CommandLine;
using System.Diagnostics;
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
        torch.manual_seed(0);
        double copyGbs = CopyBandwidth(dev, iters);
        o.WriteLine($"device-to-device copy: {copyGbs:F0} GB/s (bytes read + written)");
        o.WriteLine("shape          dq  dtype  parity  kernel_us  kernel_GB/s  %copy  torch_us  torch_GB/s  speedup");
        foreach (var (rows, cols) in new[] { (4096L, 4096L), (11008L, 4096L), (4096L, 11008L) })
            foreach (bool dq in new[] { true, false })
                foreach (var dtype in new[] { ScalarType.BFloat16, ScalarType.Float32 })
                {
                    using var scope = torch.NewDisposeScope();
                    long n = rows * cols, nb = n / 64;
                    var packed = torch.randint(0, 256, new[] { n / 2 }, ScalarType.Byte, dev);
                    var codebook = torch.tensor(Nf4Codebook).to(dev);
                    Tensor? absmax = null, absmaxQ = null, nestedAbsmax = null, nestedCode = null;
                    float offset = 0.0123f;
                    if (dq)
                    {
                        absmaxQ = torch.randint(0, 256, new[] { nb }, ScalarType.Byte, dev);
                        nestedAbsmax = torch.rand(new[] { (nb + 255) / 256 }, device: dev) + 0.1f;
                        nestedCode = torch.sort(torch.rand(256, device: dev) * 2 - 1).values;
                    }
                    else absmax = torch.rand(new[] { nb }, device: dev) + 0.05f;

                    var reference = Reference(packed, absmax, absmaxQ, nestedAbsmax, nestedCode, offset, codebook, n, 64, 256, dtype);
                    var fast = FourBitCudaKernel.TryDequantize(packed, absmax, absmaxQ, nestedAbsmax, nestedCode, offset, codebook, n, 64, 256, dtype)
                        ?? throw new InvalidOperationException("kernel unavailable: " + FourBitCudaKernel.Unavailable);
                    bool same = reference.eq(fast).all().item<bool>();
                    double kUs = Time(iters, () => FourBitCudaKernel.TryDequantize(packed, absmax, absmaxQ, nestedAbsmax, nestedCode, offset, codebook, n, 64, 256, dtype)!.Dispose());
                    double tUs = Time(Math.Max(3, iters / 5), () => Reference(packed, absmax, absmaxQ, nestedAbsmax, nestedCode, offset, codebook, n, 64, 256, dtype).Dispose());
                    long bytes = n / 2 + (dq ? nb : nb * 4) + n * (dtype == ScalarType.BFloat16 ? 2 : 4);
                    double kGbs = bytes / kUs / 1e3, tGbs = bytes / tUs / 1e3;
                    o.WriteLine($"{rows}x{cols,-8} {(dq ? "yes" : "no "),-3} {(dtype == ScalarType.BFloat16 ? "bf16" : "fp32"),-6} {(same ? "exact" : "DIFF"),-7} {kUs,9:F1}  {kGbs,11:F0}  {100 * kGbs / copyGbs,5:F0}  {tUs,8:F1}  {tGbs,10:F0}  {tUs / kUs,6:F1}x");
                    if (!same) throw new InvalidOperationException("kernel output differs from the torch-op reference");
                }
    }

    static readonly float[] Nf4Codebook =
    {
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
        -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
        0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    };

    /// <summary>The torch-op path (same arithmetic order as the kernel: fp32 mul, fp32 add, fp32 mul, one cast).</summary>
    static Tensor Reference(Tensor packed, Tensor? absmax, Tensor? absmaxQ, Tensor? nestedAbsmax, Tensor? nestedCode, float offset,
        Tensor codebook, long n, int blocksize, int nestedBlocksize, ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        var four = torch.tensor(4, ScalarType.Byte, packed.device);
        var hi = packed.bitwise_right_shift(four);
        var lo = packed.bitwise_and(15);
        var codes = torch.stack(new[] { hi, lo }, 1).reshape(-1).to(ScalarType.Int64);
        var values = codebook.index_select(0, codes).view(-1, blocksize);                 // (nBlocks, blocksize)
        Tensor scale;
        if (absmaxQ is not null)
        {
            long nb = absmaxQ.shape[0];
            var nestedIdx = torch.arange(nb, device: packed.device).div(nestedBlocksize, rounding_mode: RoundingMode.floor);
            scale = nestedCode!.index_select(0, absmaxQ.to(ScalarType.Int64)).mul(nestedAbsmax!.index_select(0, nestedIdx)).add(offset);
        }
        else scale = absmax!;
        return values.mul(scale.unsqueeze(1)).reshape(n).to(dtype).MoveToOuterDisposeScope();
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
