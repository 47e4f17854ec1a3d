using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using QLoraNet.Kernels;
using QLoraNet.Kernels.Cuda;
using QLoraNet.Models;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Cli;

/// <summary>
/// `bench kernel`: every CUDA kernel against its torch-op reference on the GPU, at Llama-7B/13B shapes. Parity
/// first (bit for bit where the arithmetic is the same, else within an error bound derived from the arithmetic and
/// printed with the result), then timing against the torch-op path (<see cref="CudaTiming"/>: device time back to
/// back, and host time per call) and, for the memory-bound kernels, against device-to-device copy bandwidth. One JSON
/// object per line; the last line sums up. Exit code 1 if any parity check fails.
/// </summary>
public static class BenchKernelCommand
{
    static readonly string[] Sections = ["nf4", "rmsnorm", "rope", "glu", "dropout", "adamw", "ce", "lora", "ternary", "int8"];

    public static Command Create(TextWriter stdout)
    {
        var iters = new Option<int>("--iters") { Description = "calls per timing", DefaultValueFactory = _ => 20 };
        var only = new Option<string>("--only") { Description = "comma-separated sections: " + string.Join(",", Sections), DefaultValueFactory = _ => string.Join(",", Sections) };
        var probe = new Option<bool>("--stream-probe") { Description = "only report libtorch's current CUDA stream (through libc10_cuda's C++ ABI)" };
        var smoke = new Option<bool>("--smoke") { Description = "the same checks on the CPU at small shapes, where the ops run their references (tests the benchmark itself; timings mean nothing)" };
        var cmd = new Command("kernel", "parity and speed of the fused CUDA kernels against their torch-op references (CUDA)");
        cmd.Options.Add(iters);
        cmd.Options.Add(only);
        cmd.Options.Add(probe);
        cmd.Options.Add(smoke);
        cmd.SetAction(pr =>
        {
            LibTorchProbe.EnsureLoaded();
            bool small = pr.GetValue(smoke);
            if (!small && !cuda.is_available()) throw new InvalidOperationException("bench kernel needs a CUDA device (build with -p:TorchBackend=system on a GPU machine)");
            if (pr.GetValue(probe)) { stdout.WriteLine(Json(TorchStreamProbe.Describe())); return 0; }
            var chosen = pr.GetValue(only)!.Split(',', StringSplitOptions.RemoveEmptyEntries);
            foreach (var s in chosen)
                if (!Sections.Contains(s)) throw new ArgumentException($"--only: unknown section '{s}' (choices: {string.Join(", ", Sections)})");
            return new Bench(stdout, small ? 2 : pr.GetValue(iters), small).Run(chosen);
        });
        return cmd;
    }

    static readonly JsonSerializerOptions JsonOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    static string Json(Dictionary<string, object?> fields) => JsonSerializer.Serialize(fields, JsonOptions);

    /// <summary>One run: the output, the timer and the tally of parity results.</summary>
    sealed class Bench(TextWriter o, int iters, bool small)
    {
        readonly Device _dev = small ? CPU : CUDA;
        // The CLI's selection, as `train` makes it: on the CPU (--smoke) every op is its reference.
        readonly KernelSelection _kernels = KernelChoice.For(small ? CPU : CUDA);
        // The backward handles of the ops run here (a model would own them); released after each backward.
        readonly BackwardHandles _handles = new();
        int _checks, _failures;
        CudaTiming _timing = null!;

        FusedKernels Fused => _kernels.Fused;

        public int Run(string[] sections)
        {
            manual_seed(0);
            using var timing = _timing = new CudaTiming(_dev);
            Emit(new() { ["bench"] = "copy", ["gbs"] = R(_timing.CopyGbs), ["note"] = "device-to-device copy, bytes read + written" });
            Emit(new() { ["bench"] = "kernels", ["selection"] = _kernels.Report() });
            // Off the CPU every kernel must have loaded: a parity run that silently measured references would say nothing.
            if (!small)
                foreach (var line in _kernels.Report().Where(l => l.Contains(": torch-ops (")))
                {
                    _checks++;
                    _failures++;
                    Emit(new() { ["kernel_not_loaded"] = line });
                }
            foreach (var s in sections)
            {
                try
                {
                    switch (s)
                    {
                        case "nf4": Nf4(); break;
                        case "rmsnorm": RmsNorm(); break;
                        case "rope": Rope(); break;
                        case "glu": Glu(); break;
                        case "dropout": Dropout(); break;
                        case "adamw": AdamW(); break;
                        case "ce": CrossEntropy(); break;
                        case "lora": Lora(); break;
                        case "ternary": Ternary(); break;
                        case "int8": Int8(); break;
                    }
                }
                catch (Exception e)
                {
                    _failures++;
                    Emit(new() { ["section"] = s, ["error"] = e.GetType().Name + ": " + e.Message });
                }
            }
            var calls = Fused.CallCounts().ToDictionary(kv => kv.Key, kv => (object?)new Dictionary<string, long> { ["kernel"] = kv.Value.Kernel, ["reference"] = kv.Value.Reference });
            Emit(new() { ["summary"] = "bench kernel", ["parity_checks"] = _checks, ["failures"] = _failures, ["calls_by_path"] = calls });
            return _failures == 0 ? 0 : 1;
        }

        void Emit(Dictionary<string, object?> fields)
        {
            o.WriteLine(Json(fields));
            o.Flush();
        }

        /// <summary>A number for the JSON: five significant digits (non-finite values as strings).</summary>
        static object R(double v) => double.IsFinite(v) ? double.Parse(v.ToString("G5", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture) : v.ToString(CultureInfo.InvariantCulture);

        static double Gbs(long bytes, (double Device, double Host) t) => bytes / (t.Device * 1e3);

        // ---- parity ----------------------------------------------------------------------------------------

        /// <summary>Bit-for-bit comparison (the same arithmetic); records and returns the fields to print.</summary>
        Dictionary<string, object?> Exact(Tensor actual, Tensor expected)
        {
            using var scope = NewDisposeScope();
            bool finite = !actual.isnan().any().item<bool>();
            double identical = actual.eq(expected).to(ScalarType.Float64).mean().item<double>();
            bool pass = finite && identical == 1.0;
            _checks++;
            if (!pass) _failures++;
            return new()
            {
                ["parity"] = pass ? "exact" : "FAIL", ["identical_fraction"] = identical,
                ["max_abs_diff"] = R((actual.to(ScalarType.Float64) - expected.to(ScalarType.Float64)).abs().max().item<double>()),
            };
        }

        /// <summary>|actual - expected| &lt;= bound elementwise; prints the worst ratio to the bound and how much is bit-identical.</summary>
        Dictionary<string, object?> Within(Tensor actual, Tensor expected, Tensor bound, string boundNote)
        {
            using var scope = NewDisposeScope();
            bool finite = !actual.isnan().any().item<bool>();
            var diff = (actual.to(ScalarType.Float64) - expected.to(ScalarType.Float64)).abs();
            double ratio = (diff / bound.to(ScalarType.Float64).clamp_min(1e-300)).max().item<double>();
            double identical = actual.eq(expected).to(ScalarType.Float64).mean().item<double>();
            bool pass = finite && ratio <= 1.0;
            _checks++;
            if (!pass) _failures++;
            return new()
            {
                ["parity"] = pass ? (identical == 1.0 ? "exact" : "within_bound") : "FAIL", ["identical_fraction"] = identical,
                ["max_diff_over_bound"] = R(ratio), ["max_abs_diff"] = R(diff.max().item<double>()), ["bound"] = boundNote,
            };
        }

        static double U(ScalarType t) => t == ScalarType.BFloat16 ? Math.Pow(2, -8) : Math.Pow(2, -24);
        static readonly double U32 = Math.Pow(2, -24);
        static Tensor D64(Tensor t) => t.detach().to(ScalarType.Float64);

        /// <summary>Device and host microseconds per call of <paramref name="op"/>, each call in its own dispose scope.</summary>
        (double Device, double Host) Time(Action op, int? n = null) => _timing.Time(() =>
        {
            using var scope = NewDisposeScope();
            op();
        }, n ?? iters);

        Dictionary<string, object?> Speed(string what, (double Device, double Host) fused, (double Device, double Host) reference) => new()
        {
            [what + "_fused_us"] = R(fused.Device), [what + "_torch_us"] = R(reference.Device),
            [what + "_speedup"] = R(reference.Device / fused.Device),
            [what + "_fused_host_us"] = R(fused.Host), [what + "_torch_host_us"] = R(reference.Host),
        };

        void Emit(string kernel, string shape, ScalarType dtype, params Dictionary<string, object?>[] parts)
        {
            var fields = new Dictionary<string, object?> { ["kernel"] = kernel, ["shape"] = shape, ["dtype"] = dtype == ScalarType.BFloat16 ? "bf16" : "fp32" };
            foreach (var p in parts) foreach (var (k, v) in p) fields[k] = v;
            Emit(fields);
        }

        static Dictionary<string, object?> Prefixed(string prefix, Dictionary<string, object?> d) =>
            d.ToDictionary(kv => prefix + "_" + kv.Key, kv => kv.Value);

        // ---- NF4 dequantization --------------------------------------------------------------------------------

        void Nf4()
        {
            (long, long)[] shapes = small ? [(256, 128), (64, 96)] : [(4096, 4096), (11008, 4096), (4096, 11008), (5120, 5120), (13824, 5120), (5120, 13824)];
            foreach (var (rows, cols) in shapes)
                foreach (bool dq in new[] { true, false })
                {
                    using var scope = NewDisposeScope();
                    long n = rows * cols;
                    // Two real quantized weights (random normal values, quantized on the GPU) so every code and scale
                    // occurs; timing alternates between them and keeps three outputs alive, so that no call finds its
                    // input or output in the 60 MB L2 cache from the call before.
                    var weights = Enumerable.Range(0, 2).Select(_ => FourBitWeight.Quantize(randn(new[] { rows, cols }, ScalarType.BFloat16, _dev), FourBitType.Nf4, 64, dq)).ToArray();
                    foreach (var dtype in (rows, cols) == shapes[0] ? new[] { ScalarType.BFloat16, ScalarType.Float32 } : new[] { ScalarType.BFloat16 })
                    {
                        var reference = weights[0].DequantizeWithTorchOps(dtype);
                        long bytes = n / 2 + (dq ? n / 64 + 4 * (n / 64 / 256) : 4 * (n / 64)) + n * (dtype == ScalarType.BFloat16 ? 2 : 4);
                        (double Device, double Host)? torchTime = null;
                        if (dtype == ScalarType.BFloat16 && dq)
                            torchTime = Time(() => weights[0].DequantizeWithTorchOps(dtype), Math.Max(3, iters / 4));
                        foreach (var variant in Enum.GetValues<FourBitCudaKernel.Variant>())
                        {
                            // Poison: free a NaN-filled block of the output's size so the kernel's output likely reuses
                            // it; an element the kernel fails to write then shows as a NaN.
                            using (full(new[] { n }, double.NaN, dtype, _dev)) { }
                            if (_kernels.FourBitCuda is not { } nf4 || !FourBitCudaKernel.Applies(weights[0], dtype, variant)) continue;
                            using var fast = nf4.Dequantize(weights[0], dtype, variant);
                            var parity = Exact(fast, reference);
                            var t = TimeAlternating(weights, w => nf4.Dequantize(w, dtype, variant));
                            double gbs = bytes / (t.Device * 1e3);
                            var fields = new Dictionary<string, object?>
                            {
                                ["variant"] = variant.ToString(), ["double_quant"] = dq, ["kernel_us"] = R(t.Device), ["host_us"] = R(t.Host),
                                ["gbs"] = R(gbs), ["pct_copy"] = R(100 * gbs / _timing.CopyGbs), ["default"] = variant == FourBitCudaKernel.DefaultVariant,
                            };
                            if (torchTime is { } tt) { fields["torch_us"] = R(tt.Device); fields["speedup"] = R(tt.Device / t.Device); }
                            Emit("nf4_dequant", $"{rows}x{cols}", dtype, parity, fields);
                        }
                        // The path training takes (no variant asked for): the first call makes the weight's launch
                        // plan, every later call launches from it; parity of a planned call, and its host time.
                        if (_kernels.FourBitCuda is { } planned)
                        {
                            planned.Dequantize(weights[0], dtype).Dispose();
                            planned.Dequantize(weights[1], dtype).Dispose();
                            using (full(new[] { n }, double.NaN, dtype, _dev)) { }
                            using var again = planned.Dequantize(weights[0], dtype);
                            var t = TimeAlternating(weights, w => planned.Dequantize(w, dtype));
                            Emit("nf4_dequant", $"{rows}x{cols}", dtype, Exact(again, reference), new Dictionary<string, object?>
                            {
                                ["variant"] = "planned", ["double_quant"] = dq, ["kernel_us"] = R(t.Device), ["host_us"] = R(t.Host),
                                ["gbs"] = R(bytes / (t.Device * 1e3)),
                            });
                        }
                    }
                }
        }

        // Times a dequantization alternating between the two weights and keeping three outputs alive, so that no call
        // finds its input or output in the L2 cache from the call before.
        (double Device, double Host) TimeAlternating(FourBitWeight[] weights, Func<FourBitWeight, Tensor> dequantize)
        {
            var ring = new Tensor?[3];
            int k = 0;
            var t = _timing.Time(() =>
            {
                ring[k % 3]?.Dispose();
                ring[k % 3] = dequantize(weights[k % 2]);
                k++;
            }, iters);
            foreach (var r in ring) r?.Dispose();
            return t;
        }

        // ---- RMSNorm -------------------------------------------------------------------------------------------

        void RmsNorm()
        {
            const double eps = 1e-5;
            var rmsShapes = small
                ? new[] { (6L, 64L, ScalarType.BFloat16), (5L, 72L, ScalarType.Float32) }
                : new[] { (2048L, 4096L, ScalarType.BFloat16), (2048L, 5120L, ScalarType.BFloat16), (2048L, 4096L, ScalarType.Float32) };
            foreach (var (rows, width, dtype) in rmsShapes)
                foreach (var (residual, gemma) in new[] { (false, false), (true, false), (false, true) })
                {
                    using var scope = NewDisposeScope();
                    var x = (randn(rows, width, ScalarType.Float32, _dev) * 2).to(dtype);
                    var res = randn(rows, width, ScalarType.Float32, _dev).to(dtype);
                    var w = (1 + 0.1 * randn(width, ScalarType.Float32, _dev)).to(dtype);
                    var (dy, dh) = (randn(rows, width, ScalarType.Float32, _dev).to(dtype), randn(rows, width, ScalarType.Float32, _dev).to(dtype));
                    string name = "rmsnorm" + (residual ? "_residual" : "") + (gemma ? "_gemma" : "");
                    var forwardParity = new Dictionary<string, object?>();
                    var h = residual ? x + res : x;
                    if (residual)
                    {
                        var (hk, yk) = Fused.RmsNorm.ApplyWithResidual(x, res, w, eps, gemma, _handles);
                        foreach (var (kk, v) in Prefixed("h", Exact(hk, h))) forwardParity[kk] = v;
                        foreach (var (kk, v) in Prefixed("y", Within(yk, RmsNormReference.Forward(h, w, eps, gemma), ForwardBound(h, w, eps, gemma), ForwardNote))) forwardParity[kk] = v;
                    }
                    else
                        forwardParity = Prefixed("y", Within(Fused.RmsNorm.Apply(x, w, eps, gemma, _handles), RmsNormReference.Forward(x, w, eps, gemma), ForwardBound(x, w, eps, gemma), ForwardNote));

                    // Backward: the kernel's dx against autograd through the torch ops.
                    var xr = x.detach().requires_grad_(true);
                    var rr = res.detach().requires_grad_(true);
                    Tensor expected, actual;
                    if (residual)
                    {
                        var hp = xr + rr;
                        expected = autograd.grad([hp, RmsNormReference.Forward(hp, w, eps, gemma)], [xr], [dh, dy])[0];
                        var (hk, yk) = Fused.RmsNorm.ApplyWithResidual(xr, rr, w, eps, gemma, _handles);
                        actual = autograd.grad([hk, yk], [xr], [dh, dy])[0];
                    }
                    else
                    {
                        expected = autograd.grad([RmsNormReference.Forward(xr, w, eps, gemma)], [xr], [dy])[0];
                        actual = autograd.grad([Fused.RmsNorm.Apply(xr, w, eps, gemma, _handles)], [xr], [dy])[0];
                    }
                    var backwardBound = BackwardBound(h, w, dy, eps, gemma, residual ? expected - dh : expected);
                    if (residual) backwardBound = backwardBound + 2 * U(dtype) * (D64(expected).abs() + backwardBound);
                    var backwardParity = Prefixed("dx", Within(actual, expected, backwardBound, BackwardNote));

                    var fwdFused = residual
                        ? Time(() => { using var _ = no_grad(); Fused.RmsNorm.ApplyWithResidual(x, res, w, eps, gemma, _handles); })
                        : Time(() => { using var _ = no_grad(); Fused.RmsNorm.Apply(x, w, eps, gemma, _handles); });
                    var fwd = Speed("fwd", fwdFused, residual
                        ? Time(() => { using var _ = no_grad(); var hh = x + res; RmsNormReference.Forward(hh, w, eps, gemma); })
                        : Time(() => { using var _ = no_grad(); RmsNormReference.Forward(x, w, eps, gemma); }));
                    var both = Speed("fwd_bwd",
                        Time(() =>
                        {
                            if (residual) { var (hk, yk) = Fused.RmsNorm.ApplyWithResidual(xr, rr, w, eps, gemma, _handles); autograd.grad([hk, yk], [xr, rr], [dh, dy]); }
                            else autograd.grad([Fused.RmsNorm.Apply(xr, w, eps, gemma, _handles)], [xr], [dy]);
                            _handles.Release();
                        }),
                        Time(() =>
                        {
                            if (residual) { var hp = xr + rr; autograd.grad([hp, RmsNormReference.Forward(hp, w, eps, gemma)], [xr, rr], [dh, dy]); }
                            else autograd.grad([RmsNormReference.Forward(xr, w, eps, gemma)], [xr], [dy]);
                        }));
                    long bytes = rows * width * (residual ? 4 : 2) * (dtype == ScalarType.BFloat16 ? 2 : 4);
                    var bw = new Dictionary<string, object?> { ["fwd_gbs"] = R(Gbs(bytes, fwdFused)), ["fwd_pct_copy"] = R(100 * Gbs(bytes, fwdFused) / _timing.CopyGbs) };
                    Emit(name, $"{rows}x{width}", dtype, forwardParity, backwardParity, fwd, both, bw);
                }
        }

        const string ForwardNote = "(eps_r + 2u) |w h r| + 2u |y|, eps_r = (H + 8) u32 (fp32 statistics in another order, rsqrt.approx)";
        const string BackwardNote = "u32 (8|g| r + (H+8) |h| r^3 S/H) + eps_r (|g| r + 3 |h| r^3 S/H) + 2u (|dx| + that), S = sum |g h|";

        static Tensor ForwardBound(Tensor h, Tensor w, double eps, bool gemma)
        {
            var h64 = D64(h);
            long width = h64.shape[^1];
            double epsR = (width + 8) * U32, u = U(h.dtype);
            var r = (h64.pow(2).mean([-1L], keepdim: true) + eps).rsqrt();
            var scale = gemma ? (1 + D64(w)).abs() : D64(w).abs();
            var exact = h64 * r * (gemma ? 1 + D64(w) : D64(w));
            return (epsR + 2 * (gemma ? U32 : u)) * (h64.abs() * r * scale) + 2 * u * exact.abs() + 1e-30;
        }

        static Tensor BackwardBound(Tensor h, Tensor w, Tensor dy, double eps, bool gemma, Tensor reference)
        {
            var h64 = D64(h);
            long width = h64.shape[^1];
            double epsR = (width + 8) * U32, u = U(h.dtype);
            var g = (D64(dy) * (gemma ? 1 + D64(w) : D64(w))).abs();
            var r = (h64.pow(2).mean([-1L], keepdim: true) + eps).rsqrt();
            var s = (g * h64.abs()).sum([-1L], keepdim: true);
            var second = h64.abs() * r.pow(3) * s / width;
            var pre = U32 * (8 * g * r + (width + 8) * second) + epsR * (g * r + 3 * second);
            return pre + 2 * u * (D64(reference).abs() + pre) + 1e-30;
        }

        // ---- RoPE ----------------------------------------------------------------------------------------------

        void Rope()
        {
            var ropeShapes = small
                ? new[] { (2L, 4L, 2L, 8L, 32L, ScalarType.BFloat16), (1L, 2L, 2L, 5L, 16L, ScalarType.Float32) }
                : new[] { (4L, 32L, 32L, 512L, 128L, ScalarType.BFloat16), (1L, 32L, 8L, 2048L, 128L, ScalarType.BFloat16), (4L, 32L, 32L, 512L, 128L, ScalarType.Float32) };
            foreach (var (batch, heads, kvHeads, seq, dim, dtype) in ropeShapes)
            {
                using var scope = NewDisposeScope();
                using var rotary = new RotaryEmbedding("rotary_emb", dim, 10000.0, dtype, _dev);
                var positions = arange(seq, ScalarType.Int64, _dev).unsqueeze(0).expand(batch, seq);
                var (cos, sin) = rotary.call(positions);
                // As the model makes them: transposes of the projections' (B, T, heads, D) outputs.
                var q = randn(new[] { batch, seq, heads, dim }, ScalarType.Float32, _dev).to(dtype).transpose(1, 2).requires_grad_(true);
                var k = randn(new[] { batch, seq, kvHeads, dim }, ScalarType.Float32, _dev).to(dtype).transpose(1, 2).requires_grad_(true);
                var dq = randn(new[] { batch, heads, seq, dim }, ScalarType.Float32, _dev).to(dtype);
                var dk = randn(new[] { batch, kvHeads, seq, dim }, ScalarType.Float32, _dev).to(dtype);
                var (qr, kr) = (RopeReference.Forward(q, cos, sin), RopeReference.Forward(k, cos, sin));
                var (qf, kf) = Fused.Rope.ApplyQk(q, k, cos, sin, _handles);
                var g1 = autograd.grad([qr, kr], [q, k], [dq, dk]);
                var g2 = autograd.grad([qf, kf], [q, k], [dq, dk]);
                _handles.Release();
                var fwdFused = Time(() => { using var _ = no_grad(); Fused.Rope.ApplyQk(q, k, cos, sin, _handles); });
                var fwd = Speed("fwd", fwdFused, Time(() => { using var _ = no_grad(); RopeReference.Forward(q, cos, sin); RopeReference.Forward(k, cos, sin); }));
                var both = Speed("fwd_bwd",
                    Time(() => { var (a, b) = Fused.Rope.ApplyQk(q, k, cos, sin, _handles); autograd.grad([a, b], [q, k], [dq, dk]); _handles.Release(); }),
                    Time(() => { autograd.grad([RopeReference.Forward(q, cos, sin), RopeReference.Forward(k, cos, sin)], [q, k], [dq, dk]); }));
                long bytes = 2 * (q.numel() + k.numel()) * (dtype == ScalarType.BFloat16 ? 2 : 4);
                Emit("rope_qk", $"q {batch}x{heads}x{seq}x{dim}, k {kvHeads} heads", dtype,
                    Prefixed("q", Exact(qf, qr)), Prefixed("k", Exact(kf, kr)), Prefixed("dq", Exact(g2[0], g1[0])), Prefixed("dk", Exact(g2[1], g1[1])),
                    fwd, both, new() { ["fwd_gbs"] = R(Gbs(bytes, fwdFused)), ["fwd_pct_copy"] = R(100 * Gbs(bytes, fwdFused) / _timing.CopyGbs) });
            }
        }

        // ---- SwiGLU / GeGLU ------------------------------------------------------------------------------------

        void Glu()
        {
            // strided: gate and up are the two halves of one (rows, 2 width) tensor, as one GEMM for both makes them.
            var gluShapes = small
                ? new[] { (6L, 40L, ScalarType.BFloat16, GluActivation.Silu, false), (6L, 40L, ScalarType.BFloat16, GluActivation.GeluTanh, false), (3L, 16L, ScalarType.Float32, GluActivation.Silu, false), (6L, 40L, ScalarType.BFloat16, GluActivation.Silu, true) }
                : new[]
                {
                    (2048L, 11008L, ScalarType.BFloat16, GluActivation.Silu, false), (2048L, 13824L, ScalarType.BFloat16, GluActivation.Silu, false),
                    (2048L, 11008L, ScalarType.BFloat16, GluActivation.GeluTanh, false), (2048L, 11008L, ScalarType.Float32, GluActivation.Silu, false),
                    (2048L, 11008L, ScalarType.BFloat16, GluActivation.Silu, true), (2048L, 11008L, ScalarType.BFloat16, GluActivation.GeluTanh, true),
                };
            foreach (var (rows, width, dtype, activation, strided) in gluShapes)
            {
                using var scope = NewDisposeScope();
                var g = (randn(rows, width, ScalarType.Float32, _dev) * 3).to(dtype).requires_grad_(true);
                var u = randn(rows, width, ScalarType.Float32, _dev).to(dtype).requires_grad_(true);
                var dy = randn(rows, width, ScalarType.Float32, _dev).to(dtype);
                var reference = GluReference.Forward(g, u, activation);
                var both2 = strided ? cat([g, u], 1) : null;                                      // (rows, 2 width)
                var (gIn, uIn) = strided ? (both2!.narrow(1, 0, width), both2.narrow(1, width, width)) : (g, u);
                var fused = Fused.Glu.Apply(gIn, uIn, activation, _handles);
                var expected = autograd.grad([reference], [g, u], [dy]);
                var actual = autograd.grad([fused], [g, u], [dy]);
                _handles.Release();
                // act in fp32 by torch, for the bounds.
                var g32 = g.detach().to(ScalarType.Float32);
                var act = D64(activation == GluActivation.Silu ? F.silu(g32) : F.gelu(g32, TorchSharp.Modules.GELU.Approximate.tanh));
                double uu = U(dtype);
                // act's own error: 8 u32 relative for silu; gelu computes 1 + tanh(.), which cancels in the negative
                // tail, so there the error is absolute: |g|/2 times tanh's (ours ~4 u32, libm's ~1 u32).
                var gAbs = D64(g).abs();
                var actError = 8 * U32 * act.abs() + (activation == GluActivation.GeluTanh ? 0.5 * gAbs * 6 * U32 : zeros_like(act));
                var outBound = (2 * uu * act.abs() + actError) * D64(u).abs() * (1 + 2 * uu) + 2 * uu * D64(reference).abs() + 1e-30;
                var duBound = (2 * uu * act.abs() + actError) * D64(dy).abs() * (1 + 2 * uu) + 2 * uu * D64(expected[1]).abs() + 1e-30;
                var pre = U32 * (D64(dy) * D64(u)).abs() * (1 + 2 * uu) * (16 + 4 * gAbs * (1 + 0.134145 * gAbs.pow(2)));
                var dgBound = pre + 2 * uu * (D64(expected[0]).abs() + pre) + 1e-30;
                const string note = "out, du: (2u |act| + e_act) |x| + 2u |ref|, e_act = 8 u32 |act| (+ 3 u32 |g| for gelu's 1 + tanh); dg: u32 |dy u| (16 + 4|g|(1 + 3 kappa g^2)) + 2u (|ref| + that)";
                var fwdFused = Time(() => { using var _ = no_grad(); Fused.Glu.Apply(gIn, uIn, activation, _handles); });
                var fwd = Speed("fwd", fwdFused, Time(() => { using var _ = no_grad(); GluReference.Forward(g, u, activation); }));
                var both = Speed("fwd_bwd",
                    Time(() => { autograd.grad([Fused.Glu.Apply(gIn, uIn, activation, _handles)], [g, u], [dy]); _handles.Release(); }),
                    Time(() => { autograd.grad([GluReference.Forward(g, u, activation)], [g, u], [dy]); }));
                long bytes = rows * width * 3 * (dtype == ScalarType.BFloat16 ? 2 : 4);
                Emit((activation == GluActivation.Silu ? "swiglu" : "geglu_tanh") + (strided ? "_strided" : ""), $"{rows}x{width}", dtype,
                    Prefixed("out", Within(fused, reference, outBound, note)), Prefixed("dgate", Within(actual[0], expected[0], dgBound, note)),
                    Prefixed("dup", Within(actual[1], expected[1], duBound, note)), fwd, both,
                    new() { ["fwd_gbs"] = R(Gbs(bytes, fwdFused)), ["fwd_pct_copy"] = R(100 * Gbs(bytes, fwdFused) / _timing.CopyGbs) });
            }
        }

        // ---- LoRA dropout ---------------------------------------------------------------------------------------

        /// <summary>Bit for bit against the reference, as bits (so -0 counts), a NaN equal to any NaN (payloads are the
        /// conversion instruction's business); bf16 or fp32. Records the check.</summary>
        Dictionary<string, object?> Bitwise(Tensor actual, Tensor expected)
        {
            using var scope = NewDisposeScope();
            var a = actual.detach().cpu().contiguous().bytes.ToArray();
            var b = expected.detach().cpu().contiguous().bytes.ToArray();
            int size = (int)actual.element_size();
            static bool IsNaN(ReadOnlySpan<byte> e) => e.Length == 2
                ? (BitConverter.ToUInt16(e) & 0x7F80) == 0x7F80 && (BitConverter.ToUInt16(e) & 0x7F) != 0
                : float.IsNaN(BitConverter.ToSingle(e));
            long differing = 0;
            for (int i = 0; i < a.Length; i += size)
            {
                ReadOnlySpan<byte> ea = a.AsSpan(i, size), eb = b.AsSpan(i, size);
                if (!ea.SequenceEqual(eb) && !(IsNaN(ea) && IsNaN(eb))) differing++;
            }
            bool pass = a.Length == b.Length && differing == 0;
            _checks++;
            if (!pass) _failures++;
            return new() { ["parity"] = pass ? "exact" : "FAIL", ["differing_elements"] = differing };
        }

        void Dropout()
        {
            var shapes = small
                ? new[] { (24L, 40L, ScalarType.BFloat16, 0.1), (8L, 16L, ScalarType.Float32, 0.05) }
                : new[] { (2048L, 4096L, ScalarType.BFloat16, 0.05), (2048L, 4096L, ScalarType.BFloat16, 0.1), (2048L, 11008L, ScalarType.BFloat16, 0.1),
                          (2048L, 4096L, ScalarType.Float32, 0.1) };
            foreach (var (rows, width, dtype, p) in shapes)
            {
                using var scope = NewDisposeScope();
                var x = (randn(rows, width, ScalarType.Float32, _dev) * 3).to(dtype);
                x[0, 0] = float.NaN; x[0, 1] = float.PositiveInfinity; x[0, 2] = -0.0f; x[0, 3] = float.NegativeInfinity;
                var xr = x.detach().requires_grad_(true);
                var dy = randn(rows, width, ScalarType.Float32, _dev).to(dtype);
                dy[0, 4] = float.NaN;
                var stream = new RandomStream(1234);
                double scale = 1 / (1 - RandomStream.DropProbability(p));
                long threshold = RandomStream.DropThreshold(p);
                if (!Fused.Dropout.Fits(x))
                {
                    Emit("lora_dropout", $"{rows}x{width}", dtype, new Dictionary<string, object?> { ["path"] = "torch-ops (the kernel does not take this tensor here)" });
                    continue;
                }
                // Draw 0 by the kernel and by the reference (the stream's mask and x.mul(keep).mul_(scale)), same key.
                ulong key = stream.NextKey();
                var keep = stream.MaskOf(key, x.shape, threshold, _dev);
                var reference = Fused.Dropout.ApplyReference(xr, keep, scale);
                var expected = autograd.grad([reference], [xr], [dy])[0];
                var fused = Fused.Dropout.Apply(xr, key, threshold, scale, _handles);
                var actual = autograd.grad([fused], [xr], [dy])[0];
                _handles.Release();
                double kept = keep.to(ScalarType.Float64).mean().item<double>();
                var fwdFused = Time(() => { using var _ = no_grad(); Fused.Dropout.Apply(x, key, threshold, scale, _handles); });
                var fwd = Speed("fwd", fwdFused,
                    Time(() => { using var _ = no_grad(); Fused.Dropout.ApplyReference(x, stream.MaskOf(key, x.shape, threshold, _dev), scale); }));
                var both = Speed("fwd_bwd",
                    Time(() => { autograd.grad([Fused.Dropout.Apply(xr, key, threshold, scale, _handles)], [xr], [dy]); _handles.Release(); }),
                    Time(() => { autograd.grad([Fused.Dropout.ApplyReference(xr, stream.MaskOf(key, x.shape, threshold, _dev), scale)], [xr], [dy]); }));
                long bytes = rows * width * 2 * (dtype == ScalarType.BFloat16 ? 2 : 4);
                Emit("lora_dropout", $"{rows}x{width}, p {p}", dtype, new() { ["kept_fraction"] = R(kept), ["keep_probability"] = R(1 - RandomStream.DropProbability(p)) },
                    Prefixed("y", Bitwise(fused, reference)), Prefixed("dx", Bitwise(actual, expected)), fwd, both,
                    new() { ["fwd_gbs"] = R(Gbs(bytes, fwdFused)), ["fwd_pct_copy"] = R(100 * Gbs(bytes, fwdFused) / _timing.CopyGbs) });
            }
        }

        // ---- AdamW ---------------------------------------------------------------------------------------------

        void AdamW()
        {
            // LoRA r=16 on q/k/v/o of a 7B model: 128 modules, A (16, 4096) and B (4096, 16) each: 256 tensors, 16.8M values.
            long hiddenSize = small ? 64 : 4096;
            var shapes = Enumerable.Range(0, small ? 3 : 128).SelectMany(_ => new[] { new long[] { 16, hiddenSize }, new long[] { hiddenSize, 16 } }).ToArray();
            using var scope = NewDisposeScope();
            Tensor[] Fresh(double scale, bool positive = false) => shapes.Select(s => { var t = randn(s, ScalarType.Float32, _dev) * scale; return positive ? t.abs() : t; }).ToArray();
            var p0 = Fresh(0.02);
            var m0 = Fresh(1e-3);
            var v0 = Fresh(1e-6, positive: true);
            var grads = Fresh(1e-2);
            List<MultiTensorAdamW.Slot> Slots(Tensor[] p, Tensor[] m, Tensor[] v) => shapes.Select((_, i) => new MultiTensorAdamW.Slot(p[i], grads[i], m[i], v[i])).ToList();
            Tensor[] Clone(Tensor[] ts) => ts.Select(t => t.clone()).ToArray();
            var hyper = new MultiTensorAdamW.Hyper(2e-4, 0.9, 0.999, 1e-8, 0.01, 7);
            string shape = $"{shapes.Length} tensors, {shapes.Sum(x => x[0] * x[1]) / 1e6:F1}M values";
            var (rp, rm, rv) = (Clone(p0), Clone(m0), Clone(v0));
            MultiTensorAdamW.ReferenceStep(Slots(rp, rm, rv), hyper);
            var flat = (Tensor[] ts) => cat(ts.Select(t => t.reshape(-1)).ToArray());
            int? exactFlags = null;
            for (int flags = 0; flags < 8; flags++)
            {
                var (kp, km, kv) = (Clone(p0), Clone(m0), Clone(v0));
                using var fused = new MultiTensorAdamW(Fused.AdamW) { Flags = flags };
                fused.Step(Slots(kp, km, kv), hyper);
                var (pp, mm, vv) = (Exact(flat(kp), flat(rp)), Exact(flat(km), flat(rm)), Exact(flat(kv), flat(rv)));
                bool exact = (string)pp["parity"]! == "exact" && (string)mm["parity"]! == "exact" && (string)vv["parity"]! == "exact";
                if (flags != 0)
                {
                    // Only flags 0 (torch's arithmetic as read from its CUDA kernels) is held to exactness; the other
                    // combinations show which choice matters. Undo their tally.
                    _checks -= 3;
                    _failures -= new[] { pp, mm, vv }.Count(d => (string)d["parity"]! == "FAIL");
                }
                if (exact) exactFlags ??= flags;
                Emit("adamw_multi_tensor", shape, ScalarType.Float32, new() { ["flags"] = flags },
                    Prefixed("param", pp), Prefixed("exp_avg", mm), Prefixed("exp_avg_sq", vv));
            }
            // The train step's guard, read by the kernel on the device: a norm over the limit clips (the reference
            // clips with the same fp32 coefficient), a NaN loss sum skips the update.
            foreach (var (name, loss) in new[] { ("clip", 3.5f), ("skip", float.NaN) })
            {
                using var stats = tensor(new[] { loss, 40f }, ScalarType.Float32).to(_dev);
                var guard = new MultiTensorAdamW.Guard(stats, 1.0);
                var (gp, gm, gv) = (Clone(p0), Clone(m0), Clone(v0));
                using var guarded = new MultiTensorAdamW(Fused.AdamW);
                var result = guarded.Step(Slots(gp, gm, gv), hyper, guard);
                var (ep, em, ev) = (Clone(p0), Clone(m0), Clone(v0));
                if (name == "clip") MultiTensorAdamW.ReferenceStep(Slots(ep, em, ev), hyper, MultiTensorAdamW.ClipCoefficient(40f, 1.0));
                Emit("adamw_guard", shape, ScalarType.Float32, new() { ["guard"] = name, ["result"] = result.ToString() },
                    Prefixed("param", Exact(flat(gp), flat(ep))), Prefixed("exp_avg", Exact(flat(gm), flat(em))), Prefixed("exp_avg_sq", Exact(flat(gv), flat(ev))));
            }
            var (tp, tm, tv) = (Clone(p0), Clone(m0), Clone(v0));
            using var timed = new MultiTensorAdamW(Fused.AdamW);
            var slots = Slots(tp, tm, tv);
            var stepFused = Time(() => timed.Step(slots, hyper));
            var speed = Speed("step", stepFused, Time(() => MultiTensorAdamW.ReferenceStep(slots, hyper), Math.Max(3, iters / 4)));
            long bytes = 7L * 4 * shapes.Sum(s => s[0] * s[1]);
            Emit("adamw_multi_tensor", shape, ScalarType.Float32, speed,
                new() { ["bit_exact_flags"] = exactFlags, ["path"] = FusedOp.Spell(timed.LastPath), ["step_gbs"] = R(Gbs(bytes, stepFused)), ["step_pct_copy"] = R(100 * Gbs(bytes, stepFused) / _timing.CopyGbs) });
        }

        // ---- chunked cross-entropy -----------------------------------------------------------------------------

        void CrossEntropy()
        {
            long batch = small ? 2 : 4, seq = small ? 40 : 512, hiddenSize = small ? 32 : 4096, vocab = small ? 500 : 32000;
            using var scope = NewDisposeScope();
            var hidden = randn(new[] { batch, seq, hiddenSize }, ScalarType.Float32, _dev).to(ScalarType.BFloat16);
            var head = (randn(vocab, hiddenSize, ScalarType.Float32, _dev) * 0.02).to(ScalarType.BFloat16);
            var labels = randint(0, vocab, new[] { batch, seq }, ScalarType.Int64, _dev);
            labels.narrow(1, 0, seq / 16).fill_(ChunkedCrossEntropy.IgnoreIndex); // a prompt at the start of every row
            long chunk = small ? 16 : ChunkedCrossEntropy.TokensPerChunk(vocab);

            // Does a chunk's head matmul round like the full one (cuBLAS may pick another algorithm for fewer rows)?
            var rows = hidden.reshape(-1, hiddenSize);
            bool logitsIdentical = F.linear(rows.narrow(0, 0, chunk), head).eq(F.linear(rows, head).narrow(0, 0, chunk)).all().item<bool>();

            long MemoryUsed() => small ? 0 : CudaDriver.DeviceMemoryUsed();
            long before = MemoryUsed();
            var h1 = hidden.detach().requires_grad_(true);
            var chunked = ChunkedCrossEntropy.Sum(h1, ChunkedCrossEntropy.LinearHead(head), labels, chunk, _handles);
            var g1 = autograd.grad([chunked], [h1])[0];
            _handles.Release();
            long afterChunked = MemoryUsed();
            var h2 = hidden.detach().requires_grad_(true);
            var full = CausalLmLoss.Sum(F.linear(h2, head).to(ScalarType.Float32), labels);
            var g2 = autograd.grad([full], [h2])[0];
            long afterFull = MemoryUsed();

            double l1 = chunked.item<float>(), l2 = full.item<float>();
            long counted = ChunkedCrossEntropy.Count(labels).item<long>();
            // Equal per-token losses (same logits, same ops): the sums differ only in fp32 summation order.
            double sumBound = 2 * batch * seq * U32 * Math.Abs(l2);
            _checks++;
            bool lossOk = !logitsIdentical || Math.Abs(l1 - l2) <= sumBound;
            if (!lossOk) _failures++;
            var speed = Speed("fwd_bwd",
                Time(() => { var h = hidden.detach().requires_grad_(true); autograd.grad([ChunkedCrossEntropy.Sum(h, ChunkedCrossEntropy.LinearHead(head), labels, chunk, _handles)], [h]); _handles.Release(); }, Math.Max(3, iters / 2)),
                Time(() => { var h = hidden.detach().requires_grad_(true); autograd.grad([CausalLmLoss.Sum(F.linear(h, head).to(ScalarType.Float32), labels)], [h]); }, Math.Max(3, iters / 2)));
            Emit("chunked_cross_entropy", $"{batch}x{seq} tokens, vocab {vocab}, chunk {chunk}", ScalarType.BFloat16,
                new()
                {
                    ["chunk_logits_identical_to_full"] = logitsIdentical, ["loss_chunked"] = l1, ["loss_full"] = l2, ["counted_tokens"] = counted,
                    ["loss_parity"] = lossOk ? (l1 == l2 ? "exact" : "within_bound") : "FAIL", ["loss_bound"] = logitsIdentical ? R(sumBound) : "n/a (chunk logits round differently)",
                    ["grad_identical_fraction"] = g1.eq(g2).to(ScalarType.Float64).mean().item<double>(),
                    ["grad_max_rel_diff"] = R((D64(g1) - D64(g2)).abs().max().item<double>() / D64(g2).abs().max().item<double>()),
                    ["device_mib_grown_by_chunked"] = (afterChunked - before) >> 20, ["device_mib_grown_by_full_after_it"] = (afterFull - afterChunked) >> 20,
                },
                speed);
            FusedCrossEntropyParity(hidden, head, labels, chunk, vocab);
        }

        /// <summary>
        /// The fused loss kernel against its torch-op reference on one chunk of logits (bf16 and fp32), and the whole
        /// chunked loss taken in place against the torch-op way. Bounds, from the arithmetic of both sides (fp32 from
        /// the same inputs): a row's loss lse - x_t, lse = m + ln s, s a sum of V terms each within 2 ulp (e^x),
        /// differs by at most 2((V + 4) u32 + 2^-22 + u32 (|lse| + |loss|)); a gradient element e^(x - lse) - [j = t],
        /// in fp32 relative error at most (V + 8) u32 + 2^-22 on each side, rounded once to the logits' dtype, by
        /// at most one step of that dtype (2^-7 of its magnitude in bf16) plus twice that relative error.
        /// </summary>
        void FusedCrossEntropyParity(Tensor hidden, Tensor head, Tensor labels, long chunk, long vocab)
        {
            using var scope = NewDisposeScope();
            var rows = hidden.reshape(-1, hidden.shape[^1]);
            var targets = cat([labels.narrow(1, 1, labels.shape[1] - 1), full(new[] { labels.shape[0], 1L }, ChunkedCrossEntropy.IgnoreIndex, ScalarType.Int64, _dev)], 1)
                .reshape(-1).narrow(0, 0, chunk);
            double fp32Rel = (vocab + 8) * U32 + Math.Pow(2, -22);
            foreach (var dtype in new[] { ScalarType.BFloat16, ScalarType.Float32 })
            {
                using var dtypeScope = NewDisposeScope();
                var logits = F.linear(rows.narrow(0, 0, chunk), head).to(dtype);                        // (chunk, vocab)
                var (viaKernel, viaReference) = (logits.clone(), logits.clone());
                var lossKernel = Fused.CrossEntropy.LossAndGradientInPlace(viaKernel, targets, ChunkedCrossEntropy.IgnoreIndex);
                var lossReference = FusedCrossEntropy.Reference(viaReference, targets, ChunkedCrossEntropy.IgnoreIndex);
                var lse = D64(logits).logsumexp(1);
                var lossBound = 2 * ((vocab + 4) * U32 + Math.Pow(2, -22) + U32 * (lse.abs() + D64(lossReference).abs()));
                double step = dtype == ScalarType.BFloat16 ? Math.Pow(2, -7) : 0;
                var gradBound = D64(viaReference).abs() * (step + 2 * fp32Rel) + 1e-30;
                var time = Speed("chunk",
                    Time(() => Fused.CrossEntropy.LossAndGradientInPlace(logits.clone(), targets, ChunkedCrossEntropy.IgnoreIndex)),
                    Time(() => FusedCrossEntropy.Reference(logits.clone(), targets, ChunkedCrossEntropy.IgnoreIndex)));
                Emit("fused_cross_entropy", $"{chunk} rows, vocab {vocab}", dtype,
                    new() { ["path"] = FusedOp.Spell(Fused.CrossEntropy.Path), ["reason"] = Fused.CrossEntropy.Reason },
                    Prefixed("loss", Within(lossKernel, lossReference, lossBound, "2((V + 4) u32 + 2^-22 + u32 (|lse| + |loss|)) per row")),
                    Prefixed("grad", Within(viaKernel, viaReference, gradBound, "one step of the dtype + 2((V + 8) u32 + 2^-22), of each element")),
                    time);
            }
            // The whole loss in place (the run's op) against the torch-op way, as `train` takes it.
            var h1 = hidden.detach().requires_grad_(true);
            var h2 = hidden.detach().requires_grad_(true);
            var inPlace = new ChunkedCrossEntropy.InPlaceLoss(Fused.CrossEntropy, r => F.linear(r, head));
            var a = ChunkedCrossEntropy.Sum(h1, ChunkedCrossEntropy.LinearHead(head), labels, chunk, _handles, inPlace: inPlace);
            var ga = autograd.grad([a], [h1])[0];
            _handles.Release();
            var b = ChunkedCrossEntropy.Sum(h2, ChunkedCrossEntropy.LinearHead(head), labels, chunk, _handles);
            var gb = autograd.grad([b], [h2])[0];
            _handles.Release();
            long tokens = rows.shape[0];
            var speed = Speed("fwd_bwd",
                Time(() => { var h = hidden.detach().requires_grad_(true); autograd.grad([ChunkedCrossEntropy.Sum(h, ChunkedCrossEntropy.LinearHead(head), labels, chunk, _handles, inPlace: inPlace)], [h]); _handles.Release(); }, Math.Max(3, iters / 2)),
                Time(() => { var h = hidden.detach().requires_grad_(true); autograd.grad([ChunkedCrossEntropy.Sum(h, ChunkedCrossEntropy.LinearHead(head), labels, chunk, _handles)], [h]); _handles.Release(); }, Math.Max(3, iters / 2)));
            double la = a.item<float>(), lb = b.item<float>();
            var sumBound = tokens * 2 * ((vocab + 4) * U32 + Math.Pow(2, -22)) + 2 * tokens * U32 * Math.Abs(lb);
            _checks++;
            bool ok = Math.Abs(la - lb) <= sumBound;
            if (!ok) _failures++;
            Emit("fused_cross_entropy_loss", $"{tokens} tokens, vocab {vocab}, chunk {chunk}", ScalarType.BFloat16,
                new()
                {
                    ["loss_in_place"] = la, ["loss_torch_ops"] = lb, ["loss_parity"] = ok ? "within_bound" : "FAIL", ["loss_bound"] = R(sumBound),
                    ["grad_identical_fraction"] = ga.eq(gb).to(ScalarType.Float64).mean().item<double>(),
                    ["grad_max_rel_diff"] = R((D64(ga) - D64(gb)).abs().max().item<double>() / D64(gb).abs().max().item<double>()),
                },
                speed);
        }

        // ---- LoRA addmm path -----------------------------------------------------------------------------------

        void Lora()
        {
            long tokens = small ? 24 : 2048, inF = small ? 40 : 4096, outF = small ? 48 : 4096, r = 16;
            const double scaling = 2.0;
            using var scope = NewDisposeScope();
            var baseOut = randn(tokens, outF, ScalarType.Float32, _dev).to(ScalarType.BFloat16).requires_grad_(true);
            var h = randn(tokens, inF, ScalarType.Float32, _dev).to(ScalarType.BFloat16).requires_grad_(true);
            var a32 = (randn(r, inF, ScalarType.Float32, _dev) * 0.01).requires_grad_(true);
            var b32 = (randn(outF, r, ScalarType.Float32, _dev) * 0.01).requires_grad_(true);
            var dy = randn(tokens, outF, ScalarType.Float32, _dev).to(ScalarType.BFloat16);
            var (a, b) = (a32.to(ScalarType.BFloat16), b32.to(ScalarType.BFloat16));
            var reference = LoraPath.Reference(baseOut, h, a, b, scaling);
            var fused = LoraPath.AddLowRank(baseOut, h, a, b, scaling);
            var down = D64(F.linear(h, a));
            var up = down.matmul(D64(b).t());
            var absUp = down.abs().matmul(D64(b).abs().t());
            double u = U(ScalarType.BFloat16);
            var exact = D64(baseOut) + scaling * up;
            var bound = 1.01 * (scaling * (r * U32 * absUp + 2 * u * up.abs() + 2 * u * (up.abs() + r * U32 * absUp)) + u * exact.abs()
                                + scaling * r * U32 * absUp + u * exact.abs()) + 1e-30;
            var parity = Within(fused, reference, bound, "the reference's three roundings plus the fused GEMM's one, from exact");
            var fwd = Speed("fwd", Time(() => { using var _ = no_grad(); LoraPath.AddLowRank(baseOut, h, a32.to(ScalarType.BFloat16), b32.to(ScalarType.BFloat16), scaling); }),
                                   Time(() => { using var _ = no_grad(); LoraPath.Reference(baseOut, h, a32.to(ScalarType.BFloat16), b32.to(ScalarType.BFloat16), scaling); }));
            var both = Speed("fwd_bwd",
                Time(() => autograd.grad([LoraPath.AddLowRank(baseOut, h, a32.to(ScalarType.BFloat16), b32.to(ScalarType.BFloat16), scaling)], [baseOut, h, a32, b32], [dy])),
                Time(() => autograd.grad([LoraPath.Reference(baseOut, h, a32.to(ScalarType.BFloat16), b32.to(ScalarType.BFloat16), scaling)], [baseOut, h, a32, b32], [dy])));
            Emit("lora_addmm", $"{tokens}x{inF} -> r {r} -> {outF}", ScalarType.BFloat16, parity, fwd, both);
            WeightGradients(tokens, inF, outF, r, scaling);
        }

        /// <summary>
        /// LoRA's factor gradients added into fp32 .grad views of one flat buffer laid out as a run lays it out (three
        /// adapters sharing an input, each A then B: Training's FlatGradients), from a nonzero start so the
        /// accumulation is checked: dB = scaling · dyᵀ down per adapter, and the shared dA = Gᵀ h for all three (the
        /// batched GEMM). The fused op against fp64 within fp32 accumulation's bound; the reference rounds the product to
        /// bf16 first, its worst error is printed beside it.
        /// </summary>
        void WeightGradients(long tokens, long inF, long outF, long r, double scaling)
        {
            var op = Fused.WeightGradient;
            const int adapters = 3;
            using var scope = NewDisposeScope();
            long aN = r * inF, bN = outF * r, each = aN + bN;
            var start = randn(adapters * each, ScalarType.Float32, _dev) * 1e-3;
            var flat = start.clone();
            Tensor GradA(Tensor f, int i) => f.narrow(0, i * each, aN).view(r, inF);        // (r, in)
            Tensor GradB(Tensor f, int i) => f.narrow(0, i * each + aN, bN).view(outF, r);  // (out, r)
            var h = randn(tokens, inF, ScalarType.Float32, _dev).to(ScalarType.BFloat16);
            var dy = randn(tokens, outF, ScalarType.Float32, _dev).to(ScalarType.BFloat16);
            var down = randn(tokens, adapters * r, ScalarType.Float32, _dev).to(ScalarType.BFloat16);   // (N, Σr), the shared down
            var g = randn(tokens, adapters * r, ScalarType.Float32, _dev).to(ScalarType.BFloat16);      // (N, Σr), scaled dy B's
            var refFlat = start.clone();
            for (int i = 0; i < adapters; i++)
            {
                op.AddProduct(GradB(flat, i), dy.t(), down.narrow(1, i * r, r), scaling);
                FusedWeightGradient.AddProductReference(GradB(refFlat, i), dy.t(), down.narrow(1, i * r, r), scaling);
            }
            op.AddProducts([.. Enumerable.Range(0, adapters).Select(i => GradA(flat, i))], g.t(), h, 1.0);
            FusedWeightGradient.AddProductsReference([.. Enumerable.Range(0, adapters).Select(i => GradA(refFlat, i))], g.t(), h, 1.0);
            var exactB = stack(Enumerable.Range(0, adapters).Select(i => D64(GradB(start, i)) + scaling * D64(dy).t().matmul(D64(down.narrow(1, i * r, r)))));
            var absB = stack(Enumerable.Range(0, adapters).Select(i => scaling * D64(dy).abs().t().matmul(D64(down.narrow(1, i * r, r)).abs())));
            var prodA = D64(g).t().matmul(D64(h)).view(adapters, r, inF);                   // (3, r, in)
            var exactA = stack(Enumerable.Range(0, adapters).Select(i => D64(GradA(start, i)) + prodA[i]));
            var absA = D64(g).abs().t().matmul(D64(h).abs()).view(adapters, r, inF);
            Tensor Stacked(Tensor f, Func<Tensor, int, Tensor> grad) => stack(Enumerable.Range(0, adapters).Select(i => grad(f, i)));
            // Fused: fp32 accumulation of `tokens` products (gamma_K), the add into C and its rounding, within (K + 2) u32
            // of |terms|. The reference (what runs where cuBLAS does not) also rounds the product to bf16: u_bf16 |product| more.
            bool fused = op.Path == FusedPath.Cublas;
            double productRounding = fused ? 0 : 1.01 * U(ScalarType.BFloat16);
            string note = "fp32 accumulation: (K + 2) u32 of |terms|" + (fused ? "" : ", plus the product's bf16 rounding (reference path)");
            var parityB = Prefixed("dB", Within(Stacked(flat, GradB), exactB, (tokens + 2) * U32 * (absB + exactB.abs()) + productRounding * absB + 1e-30, note));
            var parityA = Prefixed("dA_shared", Within(Stacked(flat, GradA), exactA, (tokens + 2) * U32 * (absA + exactA.abs()) + productRounding * absA + 1e-30, note));
            double RefErr(Tensor reference, Tensor exact, Tensor abs) => ((D64(reference) - exact).abs() / (abs + exact.abs() + 1e-30)).max().item<double>();
            var referenceErrors = new Dictionary<string, object?>
            {
                ["dB_reference_max_rel_err"] = R(RefErr(Stacked(refFlat, GradB), exactB, absB)),
                ["dA_reference_max_rel_err"] = R(RefErr(Stacked(refFlat, GradA), exactA, absA)),
            };
            var speedB = Speed("dB", Time(() => op.AddProduct(GradB(flat, 0), dy.t(), down.narrow(1, 0, r), scaling)),
                Time(() => FusedWeightGradient.AddProductReference(GradB(refFlat, 0), dy.t(), down.narrow(1, 0, r), scaling)));
            var speedA = Speed("dA_shared", Time(() => op.AddProducts([.. Enumerable.Range(0, adapters).Select(i => GradA(flat, i))], g.t(), h, 1.0)),
                Time(() => FusedWeightGradient.AddProductsReference([.. Enumerable.Range(0, adapters).Select(i => GradA(refFlat, i))], g.t(), h, 1.0)));
            Emit("lora_weight_gradient", $"{tokens} tokens, {adapters} adapters, in {inF}, out {outF}, r {r}", ScalarType.BFloat16,
                new() { ["path"] = FusedOp.Spell(op.Path), ["reason"] = op.Reason }, parityB, parityA, referenceErrors, speedB, speedA);
        }

        // ---- Ternary (BitNet b1.58) product --------------------------------------------------------------------

        /// <summary>
        /// The add/subtract CUDA kernel against torch ops (unpack, fp32 matmul of the integer codes): the int32 sums
        /// exactly, then the whole forward (activation quantization and scaling included) bit for bit, and timing of
        /// the forward and of the sums alone on the 7B projections with 2048 tokens, and on 4096 -> 4096 (and 4096 ->
        /// 11008) at decoding sizes, 1 to 512 tokens: where the kernel, which reads 2-bit weights, beats unpacking them
        /// for a tensor-core matmul. The last line names that crossover beside the threshold the product uses
        /// (<see cref="TernaryMatMul.CudaKernelMaxTokens"/>). A k not a multiple of 4 (the kernel's byte path) is
        /// checked for parity only. On --smoke the CPU SIMD loop stands in for the kernel.
        /// </summary>
        void Ternary()
        {
            TernaryMatMulPath fast = small ? TernaryMatMulPath.CpuSimd : TernaryMatMulPath.Cuda;
            var kernel = _kernels.TernaryCuda;
            if (!small && kernel is null) throw new InvalidOperationException($"the ternary kernel is not selected: {_kernels.TernaryReason}");
            // (out, in, tokens, timed)
            (long M, long K, long N, bool Timed)[] shapes = small
                ? [(48, 64, 13, true), (20, 37, 9, true)]
                : [(4096, 4096, 2048, true), (11008, 4096, 2048, true), (4096, 11008, 2048, true), (1028, 4099, 37, false),
                   (4096, 4096, 1, true), (4096, 4096, 4, true), (4096, 4096, 16, true), (4096, 4096, 64, true),
                   (4096, 4096, 256, true), (4096, 4096, 512, true), (11008, 4096, 1, true), (11008, 4096, 16, true)];
            var square = new List<(long Tokens, bool KernelFaster)>();   // 4096 -> 4096: kernel vs unpack + matmul by tokens
            foreach (var (m, k, n, timed) in shapes)
            {
                using var scope = NewDisposeScope();
                var w = TernaryWeight.Quantize(randn(m, k, ScalarType.Float32, _dev));
                var x = randn(n, k, ScalarType.Float32, _dev).to(ScalarType.BFloat16);
                var (codes, _) = TernaryActivations.Quantize(x.to(ScalarType.Float32));
                var sums = Prefixed("sums", Exact(TernaryMatMul.Sums(codes, w, fast, kernel, int.MaxValue), TernaryMatMul.Sums(codes, w, TernaryMatMulPath.TorchOps)));
                var forward = Prefixed("forward", Exact(TernaryMatMul.Forward(x, w, ScalarType.BFloat16, fast, kernel, int.MaxValue),
                                                        TernaryMatMul.Forward(x, w, ScalarType.BFloat16, TernaryMatMulPath.TorchOps)));
                var fields = new Dictionary<string, object?> { ["kernel"] = "ternary_matmul", ["path"] = KernelSelection.Spell(fast), ["shape"] = $"{n} tokens x {k} -> {m}", ["dtype"] = "bf16" };
                foreach (var part in new[] { sums, forward }) foreach (var (key, v) in part) fields[key] = v;
                if (timed)
                {
                    var t = Time(() => TernaryMatMul.Forward(x, w, ScalarType.BFloat16, fast, kernel, int.MaxValue));
                    var reference = Time(() => TernaryMatMul.Forward(x, w, ScalarType.BFloat16, TernaryMatMulPath.TorchOps));
                    foreach (var (key, v) in Speed("fwd", t, reference)) fields[key] = v;
                    fields["fwd_fused_gops"] = R(2.0 * n * m * k / (t.Device * 1e3));   // additions and subtractions counted as a multiply-add's two
                    if (m == 4096 && k == 4096) square.Add((n, t.Device < reference.Device));
                    // The sums alone: the kernel against unpack + fp32 matmul, without the activation quantization and scaling.
                    var ts = Time(() => TernaryMatMul.Sums(codes, w, fast, kernel, int.MaxValue));
                    var tsRef = Time(() => TernaryMatMul.Sums(codes, w, TernaryMatMulPath.TorchOps));
                    foreach (var (key, v) in Speed("sums", ts, tsRef)) fields[key] = v;
                }
                Emit(fields);
            }
            if (square.Count > 0)
            {
                var ordered = square.OrderBy(p => p.Tokens).ToList();
                long? slowerFrom = ordered.FirstOrDefault(p => !p.KernelFaster) is { Tokens: > 0 } first ? first.Tokens : null;
                Emit(new Dictionary<string, object?>
                {
                    ["kernel"] = "ternary_crossover", ["shape"] = "tokens x 4096 -> 4096", ["measured_tokens"] = ordered.Select(p => p.Tokens).ToArray(),
                    ["kernel_faster_at"] = ordered.Where(p => p.KernelFaster).Select(p => p.Tokens).ToArray(),
                    ["unpack_matmul_faster_from_tokens"] = slowerFrom, ["threshold_in_use"] = TernaryMatMul.CudaKernelMaxTokens,
                });
            }
        }

        // ---- LLM.int8() int8 x int8 -> int32 product ------------------------------------------------------------

        /// <summary>
        /// torch._int_mm (cuBLASLt int8 GEMM) against the exact fp32 path: identical int32 products, and timing on the
        /// 7B projections with 2048 tokens; 5 tokens (padded to _int_mm's 17+ rows) for parity only. On --smoke the
        /// same on the CPU, through libtorch's CPU _int_mm.
        /// </summary>
        void Int8()
        {
            var mm = small ? Int8MatMul.CompileIntMm(_dev) : _kernels.Int8MatMulFor(_dev);
            if (mm.Path != Int8MatMulPath.IntMm) throw new InvalidOperationException($"torch._int_mm is not selected: {_kernels.Int8Reason}");
            (long M, long K, long N, bool Timed)[] shapes = small
                ? [(48, 64, 24, true), (16, 32, 5, false)]
                : [(4096, 4096, 2048, true), (11008, 4096, 2048, true), (4096, 11008, 2048, true), (4096, 4096, 5, false)];
            foreach (var (m, k, n, timed) in shapes)
            {
                using var scope = NewDisposeScope();
                var a = randint(-127, 128, [n, k], ScalarType.Int8, _dev);
                var b = randint(-127, 128, [m, k], ScalarType.Int8, _dev);
                var parity = Exact(mm.Multiply(a, b), Int8MatMul.Fp32Exact(a, b));
                var fields = new Dictionary<string, object?> { ["kernel"] = "int8_matmul", ["path"] = KernelSelection.Spell(mm.Path), ["shape"] = $"{n} tokens x {k} -> {m}", ["dtype"] = "int8" };
                foreach (var (key, v) in parity) fields[key] = v;
                if (timed)
                {
                    var t = Time(() => mm.Multiply(a, b));
                    var reference = Time(() => Int8MatMul.Fp32Exact(a, b));
                    foreach (var (key, v) in Speed("matmul", t, reference)) fields[key] = v;
                    fields["matmul_fused_tops"] = R(2.0 * n * m * k / (t.Device * 1e6));
                }
                Emit(fields);
            }
        }
    }
}
