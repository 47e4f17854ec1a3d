using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Kernels;
using QLoraNet.Quant;
using QLoraNet.Training.Optim;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Cli;

/// <summary>
/// `bench train`: QLoRA training steps on a real-size checkpoint, timed after warm-up, in the same shape as the peer
/// benchmark (random token batches, LoRA on the targets, AdamW, bf16 compute, per-layer checkpointing). Prints one
/// JSON line. Peak device memory is measured outside the process (nvidia-smi sampling, scripts/gpu/bench_7b.sh), the
/// same way as the peer's NVML figure. With --split, the step is divided into dequantization (by ablation: the same
/// step on a dense bf16 base), attention and matmuls (each timed alone at the step's shapes), and the rest.
/// </summary>
public static class BenchTrainCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face Llama directory (e.g. from make_random_llama.py)", Required = true };
        var seq = new Option<int>("--seq") { DefaultValueFactory = _ => 512 };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 4 };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 10 };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => 3 };
        var r = new Option<int>("--r") { DefaultValueFactory = _ => 16 };
        var targets = new Option<string>("--targets") { DefaultValueFactory = _ => "q_proj,k_proj,v_proj,o_proj" };
        var format = new Option<string>("--quantization") { DefaultValueFactory = _ => "nf4-dq" };
        var noCkpt = new Option<bool>("--no-ckpt");
        var split = new Option<bool>("--split") { Description = "also measure where the step time goes" };
        var hold = new Option<double>("--hold-seconds") { Description = "sleep after the timed steps (lets an outside sampler see the peak)", DefaultValueFactory = _ => 1.0 };
        var cmd = new Command("train", "time QLoRA training steps on a real-size model (CUDA)");
        foreach (var o in new Option[] { model, seq, batch, steps, warmup, r, targets, format, noCkpt, split, hold }) cmd.Options.Add(o);
        cmd.SetAction(pr =>
        {
            LibTorchProbe.EnsureLoaded();
            if (!cuda.is_available()) throw new InvalidOperationException("bench train needs a CUDA device");
            var spec = QuantSpec.Parse(pr.GetValue(format)!);
            var shape = new Shape(pr.GetValue(seq), pr.GetValue(batch), pr.GetValue(r), pr.GetValue(targets)!.Split(','), !pr.GetValue(noCkpt));
            var loadClock = Stopwatch.StartNew();
            using var llama = Load(pr.GetValue(model)!, spec, shape);
            double loadS = loadClock.Elapsed.TotalSeconds;
            var (tokS, stepMs, loss) = TimeSteps(llama, shape, pr.GetValue(steps), pr.GetValue(warmup));
            var fields = new List<string>
            {
                J("ours", "QLoraNet QLoRA (TorchSharp)"), J("quantization", spec.ToString()), J("seq", shape.Seq), J("batch", shape.Batch),
                J("ckpt", shape.Checkpointing), J("targets", string.Join(",", shape.Targets)), J("r", shape.R),
                J("trainable", TrainableParameters.Count(llama).Trainable), J("load_s", Math.Round(loadS, 1)),
                J("tokens_per_s", Math.Round(tokS, 1)), J("step_ms", Math.Round(stepMs, 1)), J("loss", Math.Round(loss, 4)),
                J("base_gib", Math.Round(llama.named_modules().Select(m => m.module).OfType<FrozenLinear>().Sum(f => f.StorageBytes) / Math.Pow(2, 30), 2)),
            };
            Thread.Sleep(TimeSpan.FromSeconds(pr.GetValue(hold)));
            if (pr.GetValue(split)) fields.AddRange(Split(llama, pr.GetValue(model)!, shape, stepMs, pr.GetValue(steps)));
            stdout.WriteLine("{" + string.Join(", ", fields) + "}");
            return 0;
        });
        return cmd;
    }

    sealed record Shape(int Seq, int Batch, int R, string[] Targets, bool Checkpointing);

    static LlamaForCausalLM Load(string dir, QuantSpec spec, Shape shape)
    {
        var compute = ScalarType.BFloat16;
        var llama = LlamaLoader.Load(dir, new LoadOptions(CUDA, compute, LinearPolicies.Quantized(spec, compute, CUDA, compute), compute));
        llama.Model.GradientCheckpointing = shape.Checkpointing;
        LoraApplier.Apply(llama, new LoraSettings(shape.R, 2 * shape.R, 0.0, false, shape.Targets, null, 0));
        llama.train();
        return llama;
    }

    /// <summary>Warm-up, then timed optimizer steps on random tokens (labels = inputs, as the peer does).</summary>
    static (double TokensPerSecond, double StepMs, double Loss) TimeSteps(LlamaForCausalLM llama, Shape shape, int steps, int warmup)
    {
        var trainable = llama.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        var opt = new AdamW(trainable.Select(p => (p.name, (Tensor)p.parameter)), 2e-4);
        manual_seed(0);
        using var ids = randint(0, 32000, new long[] { shape.Batch, shape.Seq }, ScalarType.Int64, CUDA);
        double loss = 0;
        void Step()
        {
            using var scope = NewDisposeScope();
            var logits = llama.forward(ids, null, null, null);
            var l = CausalLmLoss.Sum(logits, ids) / (shape.Batch * (shape.Seq - 1));
            l.backward();
            BackwardHandles.Release();
            opt.StepOnce();
            opt.ZeroGrad();
            loss = l.item<float>();
        }
        for (int i = 0; i < warmup; i++) Step();
        cuda.synchronize();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++) Step();
        cuda.synchronize();
        double s = sw.Elapsed.TotalSeconds;
        return (shape.Batch * shape.Seq * steps / s, s / steps * 1000, loss);
    }

    /// <summary>Where a step's time goes, measured piece by piece at the step's shapes.</summary>
    static IEnumerable<string> Split(LlamaForCausalLM nf4, string dir, Shape shape, double stepMs, int steps)
    {
        var layers = nf4.Model.Layers;
        int nLayers = layers.Count;
        var attn = layers[0].SelfAttn;
        long tokens = (long)shape.Batch * shape.Seq;
        // Passes over each layer per step: forward, the checkpoint's recomputation, backward (about 2 forwards of work).
        int forwardPasses = shape.Checkpointing ? 2 : 1;

        // Dequantization: every frozen 4-bit weight is dequantized once per forward pass and once in backward.
        var fourBit = nf4.named_modules().Select(m => m.module).OfType<FourBitLinear>().ToList();
        double dequantMs = TimeMs(5, () =>
        {
            foreach (var f in fourBit) f.DequantizeWeight(ScalarType.BFloat16).Dispose();
        }) * (forwardPasses + 1);

        // Attention (SDPA, causal, flash kernel) forward and backward at (B, heads, T, headDim).
        double attnMs;
        using (var scope = NewDisposeScope())
        {
            var q = randn(new long[] { shape.Batch, attn.NumHeads, shape.Seq, attn.HeadDim }, ScalarType.BFloat16, CUDA).requires_grad_(true);
            var k = randn(q.shape, ScalarType.BFloat16, CUDA).requires_grad_(true);
            var v = randn(q.shape, ScalarType.BFloat16, CUDA).requires_grad_(true);
            var g = randn(q.shape, ScalarType.BFloat16, CUDA);
            double fwd = TimeMs(10, () => { using var s2 = NewDisposeScope(); using var _ = no_grad(); F.scaled_dot_product_attention(q, k, v, is_casual: true); });
            double fwdBwd = TimeMs(10, () => { using var s2 = NewDisposeScope(); F.scaled_dot_product_attention(q, k, v, is_casual: true).backward(new[] { g }); });
            attnMs = nLayers * (fwd * (forwardPasses - 1) + fwdBwd);
        }

        // Matmuls of the frozen linears (dense bf16 weights of the same shapes): x @ W^T per forward pass, dY @ W in backward.
        double matmulMs;
        using (var scope = NewDisposeScope())
        {
            var shapes = fourBit.Take(fourBit.Count / nLayers).Select(f => (f.InFeatures, f.OutFeatures)).ToList();
            double perLayer = 0;
            foreach (var (inF, outF) in shapes)
            {
                var x = randn(new long[] { tokens, inF }, ScalarType.BFloat16, CUDA);
                var w = randn(new long[] { outF, inF }, ScalarType.BFloat16, CUDA);
                var dy = randn(new long[] { tokens, outF }, ScalarType.BFloat16, CUDA);
                perLayer += TimeMs(10, () => F.linear(x, w).Dispose()) * forwardPasses + TimeMs(10, () => dy.matmul(w).Dispose());
            }
            var head = nf4.LmHead;
            double headMs = 0;
            if (head is not null)
            {
                var x = randn(new long[] { tokens, head.InFeatures }, ScalarType.BFloat16, CUDA);
                var w = randn(new long[] { head.OutFeatures, head.InFeatures }, ScalarType.BFloat16, CUDA);
                headMs = 2 * TimeMs(10, () => F.linear(x, w).Dispose());
            }
            matmulMs = perLayer * nLayers + headMs;
        }
        double rest = stepMs - dequantMs - attnMs - matmulMs;
        return new[]
        {
            J("split_dequant_ms", Math.Round(dequantMs, 1)), J("split_attention_ms", Math.Round(attnMs, 1)),
            J("split_matmul_ms", Math.Round(matmulMs, 1)), J("split_rest_ms", Math.Round(rest, 1)),
        };
    }

    static double TimeMs(int iters, Action a)
    {
        a();
        cuda.synchronize();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < iters; i++) a();
        cuda.synchronize();
        return sw.Elapsed.TotalMilliseconds / iters;
    }

    static string J(string k, object v) => $"\"{k}\": " + v switch
    {
        string s => "\"" + s + "\"",
        bool b => b ? "true" : "false",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString(),
    };
}
