using System.Text.Json.Nodes;
using QLoraNet.Distributed;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Training.Data;
using QLoraNet.Training.Optim;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Distributed;

/// <summary>A small random two-layer Llama (hidden 64, vocab 64) on disk, and a global sequence of micro-batches of
/// random tokens whose prompts (label -100) differ in length, so micro-batches count different numbers of tokens.</summary>
public sealed class DataParallelFixture : IDisposable
{
    public const int Vocab = 64, MicroBatches = 16, Rows = 2, Length = 16;
    readonly TempDir _dir = Paths.Temp();

    public string ModelDir => _dir.Path;
    public IReadOnlyList<Batch> Sequence { get; }

    public DataParallelFixture()
    {
        const int hidden = 64, inter = 128, heads = 4, kvHeads = 2, headDim = 16, layers = 2;
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama", ["vocab_size"] = Vocab,
            ["hidden_size"] = hidden, ["intermediate_size"] = inter, ["num_hidden_layers"] = layers,
            ["num_attention_heads"] = heads, ["num_key_value_heads"] = kvHeads, ["rms_norm_eps"] = 1e-5, ["tie_word_embeddings"] = false,
        };
        File.WriteAllText(Path.Combine(ModelDir, "config.json"), config.ToJsonString());
        using var g = new Generator(11);
        Tensor R(params long[] shape) => randn(shape, generator: g).mul_(0.2).to(ScalarType.BFloat16);
        var w = new Dictionary<string, Tensor> { ["model.embed_tokens.weight"] = R(Vocab, hidden), ["model.norm.weight"] = ones(hidden, ScalarType.BFloat16), ["lm_head.weight"] = R(Vocab, hidden) };
        for (int l = 0; l < layers; l++)
        {
            string p = $"model.layers.{l}.";
            w[p + "self_attn.q_proj.weight"] = R(heads * headDim, hidden);
            w[p + "self_attn.k_proj.weight"] = R(kvHeads * headDim, hidden);
            w[p + "self_attn.v_proj.weight"] = R(kvHeads * headDim, hidden);
            w[p + "self_attn.o_proj.weight"] = R(hidden, heads * headDim);
            w[p + "mlp.gate_proj.weight"] = R(inter, hidden);
            w[p + "mlp.up_proj.weight"] = R(inter, hidden);
            w[p + "mlp.down_proj.weight"] = R(hidden, inter);
            w[p + "input_layernorm.weight"] = ones(hidden, ScalarType.BFloat16);
            w[p + "post_attention_layernorm.weight"] = ones(hidden, ScalarType.BFloat16);
        }
        SafeTensors.Write(Path.Combine(ModelDir, "model.safetensors"), w);
        foreach (var t in w.Values) t.Dispose();

        var rng = new Random(3);
        Sequence = Enumerable.Range(0, MicroBatches).Select(_ =>
        {
            int n = Rows * Length;
            var ids = Enumerable.Range(0, n).Select(_ => (long)rng.Next(Vocab)).ToArray();
            var labels = (long[])ids.Clone();
            for (int r = 0; r < Rows; r++)
                for (int i = 0, prompt = rng.Next(1, Length - 2); i < prompt; i++) labels[r * Length + i] = TokenizedExample.IgnoreIndex;
            var pos = Enumerable.Range(0, n).Select(i => (long)(i % Length)).ToArray();
            return new Batch(Rows, Length, ids, labels, pos, Enumerable.Repeat(1L, n).ToArray());
        }).ToList();
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// The data-parallel step, assembled from the distributed components as the trainer will call them (global token
/// normalizer, this rank's micro-batches by <see cref="RankShard"/>, <see cref="GradientSync"/> with Sum, loss
/// all-reduced, clip, AdamW), on a small random Llama with NF4+DQ and LoRA, fp32 on CPU, over the loopback backend with
/// ranks as threads. W ranks with accumulation 1 against one process with accumulation W: the same gradient sums
/// in the same order, so losses and adapter weights agree bit for bit over several steps. With accumulation 2 the
/// order of the four gradient additions differs, so the first step's gradients agree within the reordering bound.
/// </summary>
[Collection("training runs")] // heavy: keep away from the trainer's own end-to-end tests
public class DataParallelEquivalenceTests(DataParallelFixture fixture) : IClassFixture<DataParallelFixture>
{
    static readonly object Compute = new(); // one forward/backward at a time: same libtorch thread use as one process

    sealed class Replica : IDisposable
    {
        public readonly LlamaForCausalLM Model;
        public readonly List<(string Name, TorchSharp.Modules.Parameter Param)> Trainable;
        public IEnumerable<(string, Tensor)> Named => Trainable.Select(t => (t.Name, (Tensor)t.Param));
        public readonly AdamW Optimizer;

        public Replica(string modelDir)
        {
            var spec = new FourBitSpec(FourBitType.Nf4, 64, true);
            lock (Compute)
                Model = LlamaLoader.Load(modelDir, new LoadOptions(CPU, ScalarType.Float32, LinearPolicies.Quantized(spec, ScalarType.Float32, CPU, ScalarType.Float32), ScalarType.Float32));
            LoraApplier.Apply(Model, new LoraSettings(4, 8, 0, false, ["q_proj", "k_proj", "v_proj", "o_proj"], null, 42));
            Trainable = Model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList();
            // B starts at zero; give every factor values so that the first step's gradients flow everywhere.
            // (seeded: the one-process reference must start from the same weights as the ranks)
            using (no_grad())
            using (var g = new Generator(5))
                foreach (var (name, p) in Trainable.Where(t => t.Name.Contains("lora_B"))) p.normal_(0, 0.02, g);
            Optimizer = new AdamW(Named, 1e-3);
        }

        public void Dispose() => Model.Dispose();
    }

    /// <summary>One optimizer step on this rank: returns the step's loss (same on every rank).</summary>
    static double Step(Replica m, ICollectives c, GradientSync sync, RankShard shard, IReadOnlyList<Batch> stepBatches, Action? afterSync = null)
    {
        using var scope = NewDisposeScope();
        long counted = Math.Max(1, stepBatches.Sum(TokenLoss.Counted)); // the whole global step's tokens: one process's normalizer
        double lossSum = 0;
        foreach (var batch in shard.Take(stepBatches))
            lock (Compute)
            {
                using var micro = NewDisposeScope();
                var x = batch.ToTensors(CPU);
                var sum = CausalLmLoss.Sum(m.Model.forward(x.InputIds, x.PositionIds, null, null), x.Labels);
                (sum / counted).backward();
                BackwardHandles.Release();
                lossSum += sum.item<float>();
            }
        sync.Reduce();
        afterSync?.Invoke();
        var loss = tensor(new[] { lossSum }, ScalarType.Float64);
        c.AllReduceSum([loss]);
        nn.utils.clip_grad_norm_(m.Trainable.Select(t => t.Param), 0.3);
        m.Optimizer.StepOnce();
        m.Optimizer.ZeroGrad();
        return loss.item<double>() / counted;
    }

    /// <summary>Runs <paramref name="steps"/> steps on <paramref name="c"/>'s rank; returns its losses and final adapter weights.</summary>
    (double[] Losses, Tensor[] Weights) Train(ICollectives c, int accumulation, int steps, Action<Replica>? afterFirstSync = null)
    {
        using var m = new Replica(fixture.ModelDir);
        var sync = new GradientSync(c, m.Named, GradientReduction.Sum);
        sync.BroadcastParameters();
        var shard = new RankShard(c.Rank, c.WorldSize, accumulation);
        var losses = new double[steps];
        for (int s = 0; s < steps; s++)
        {
            // The next micro-batches of the global sequence, the same on every rank.
            var global = fixture.Sequence.Skip(s * shard.MicroBatchesPerStep).Take(shard.MicroBatchesPerStep).ToList();
            losses[s] = Step(m, c, sync, shard, global, s == 0 && afterFirstSync != null ? () => afterFirstSync(m) : null);
        }
        return (losses, m.Trainable.Select(t => t.Param.detach().clone()).ToArray());
    }

    static bool SameBits(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.contiguous().bytes.SequenceEqual(b.contiguous().bytes);

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void W_ranks_with_accumulation_1_equal_one_process_with_accumulation_W_bit_for_bit(int world)
    {
        const int steps = 3;
        var single = Train(new SingleProcessCollectives(CPU), accumulation: world, steps);
        var ranks = InProcessRanks.Run(world, c => Train(c, accumulation: 1, steps), bucketBytes: 64 << 10);
        foreach (var (losses, weights) in ranks)
        {
            Assert.Equal(single.Losses, losses);
            Assert.Equal(single.Weights.Length, weights.Length);
            for (int i = 0; i < weights.Length; i++) Assert.True(SameBits(single.Weights[i], weights[i]), $"adapter tensor {i} differs");
        }
        Assert.NotEqual(single.Losses[0], single.Losses[1]); // the weights moved between the steps
    }

    [Fact]
    public void Two_ranks_with_accumulation_2_match_one_process_with_4_within_the_reordering_bound()
    {
        Tensor[]? singleGrads = null;
        Train(new SingleProcessCollectives(CPU), accumulation: 4, steps: 1, m => singleGrads = m.Trainable.Select(t => t.Param.grad!.clone().DetachFromDisposeScope()).ToArray());
        var rankGrads = InProcessRanks.Run(2, c =>
        {
            Tensor[]? g = null;
            Train(c, accumulation: 2, steps: 1, m => g = m.Trainable.Select(t => t.Param.grad!.clone().DetachFromDisposeScope()).ToArray());
            return g!;
        }, bucketBytes: 64 << 10);

        // Both are sums of the same four micro-batch gradients g_i, in different orders: each within 3 u sum|g_i| of
        // the exact sum (3 additions, u = 2^-24), so within 6 u sum|g_i| of each other.
        var perMicro = MicroBatchGradients();
        double u = Math.Pow(2, -24);
        for (int i = 0; i < singleGrads!.Length; i++)
        {
            var bound = perMicro.Select(g => g[i].abs()).Aggregate((a, b) => a + b) * (6 * u);
            var diff = (singleGrads[i] - rankGrads[0][i]).abs();
            Assert.True(diff.le(bound).all().item<bool>(), $"tensor {i}: max excess {(diff - bound).max().item<float>()}");
            Assert.True(SameBits(rankGrads[0][i], rankGrads[1][i]), "both ranks hold the same reduced gradient");
        }
        Assert.Contains(Enumerable.Range(0, singleGrads.Length), i => singleGrads[i].abs().max().item<float>() > 0);
    }

    /// <summary>The first step's four micro-batch gradients, each alone (for the error bound).</summary>
    List<Tensor[]> MicroBatchGradients()
    {
        using var m = new Replica(fixture.ModelDir);
        var batches = fixture.Sequence.Take(4).ToList();
        long counted = batches.Sum(TokenLoss.Counted);
        var result = new List<Tensor[]>();
        foreach (var batch in batches)
        {
            lock (Compute)
            {
                var x = batch.ToTensors(CPU);
                (CausalLmLoss.Sum(m.Model.forward(x.InputIds, x.PositionIds, null, null), x.Labels) / counted).backward();
                BackwardHandles.Release();
            }
            result.Add(m.Trainable.Select(t => t.Param.grad!.clone()).ToArray());
            m.Optimizer.ZeroGrad();
        }
        return result;
    }
}
