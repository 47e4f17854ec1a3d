using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models.Families;
using QLoraNet.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// What the LoRA tests over the family fixtures (tests/fixtures/families/NAME) share: building a fixture with or
/// without an adapter (CPU, fp32, adapter seed 5), its logits on the first reference case, a short AdamW run on its
/// held-out ids, and a trained-looking adapter saved in peft's format.
/// </summary>
internal static class FamilyLora
{
    /// <summary>Rank 4, alpha 8, every linear of the decoder.</summary>
    public static readonly LoraSettings AllLinear = new(R: 4, Alpha: 8, Dropout: 0, TargetModules: [LoraSettings.AllLinear]);

    /// <summary>Dense weights in the checkpoint's own dtype.</summary>
    public static readonly BaseFormat Dense = new DenseFormat(null);

    /// <summary>The fixture of <paramref name="family"/> (or the checkpoint in <paramref name="dir"/>), with a new adapter
    /// when <paramref name="lora"/> is given or the adapter saved in <paramref name="adapterDir"/>.</summary>
    public static BuiltModel Build(string family, BaseFormat format, LoraSettings? lora = null, string? adapterDir = null, string? dir = null, bool checkpointing = false) =>
        ModelBuilder.Build(dir ?? FamilyReference.DirOf(family), new ModelBuildOptions(CPU, ScalarType.Float32, format,
            NewAdapter: lora, AdapterSeed: lora is null ? null : 5, AdapterDir: adapterDir, GradientCheckpointing: checkpointing));

    /// <summary>The logits of the family's first reference case, without a graph.</summary>
    public static Tensor Logits(LlamaForCausalLM model, string family)
    {
        var ids = FamilyReference.Of(family).Cases[0].InputIds;
        using var input = tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]);
        using (no_grad()) return model.forward(input);
    }

    /// <summary>The loss on <paramref name="ids"/> and every adapter factor's gradient (A, B per module), with each B
    /// set to 0.01 first so that A gets a gradient too: what the checkpointing tests compare with and without.</summary>
    public static (float Loss, Tensor[] Grads) LossAndAdapterGradients(LlamaForCausalLM model, long[] ids)
    {
        using (no_grad())
            foreach (var (_, lora) in AdapterFiles.LoraModules(model)) lora.B.fill_(0.01);
        using var input = tensor(ids, [1, ids.Length]);
        var loss = CausalLmLoss.Compute(model.forward(input), input);
        loss.backward();
        return (loss.item<float>(), AdapterFiles.LoraModules(model).SelectMany(l => new[] { l.lora.A.grad!.clone(), l.lora.B.grad!.clone() }).ToArray());
    }

    /// <summary>The trainable parameters (the adapter's A and B) by name.</summary>
    public static List<(string Name, Tensor Parameter)> Trainable(LlamaForCausalLM model) =>
        model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter)).ToList();

    /// <summary>Eight AdamW steps (lr 5e-3) on the family's first 64 held-out ids; the loss of each step.</summary>
    public static List<float> Train(LlamaForCausalLM model, IReadOnlyList<(string Name, Tensor Parameter)> trainable, string family)
    {
        var optimizer = new AdamW(trainable, lr: 5e-3);
        using var ids = tensor(FamilyReference.Of(family).HeldoutIds.Take(64).ToArray(), [1, 64]);
        var losses = new List<float>();
        model.train();
        for (int step = 0; step < 8; step++)
        {
            using var scope = NewDisposeScope();
            foreach (var (_, p) in trainable) p.grad = null;
            var loss = CausalLmLoss.Compute(model.forward(ids), ids);
            loss.backward();
            optimizer.StepOnce();
            losses.Add(loss.item<float>());
        }
        return losses;
    }

    /// <summary>An adapter with small random B on every linear (a trained-looking one), saved in peft's format.</summary>
    public static string NonZeroAdapter(string family, string dir)
    {
        using var built = Build(family, Dense, AllLinear);
        var generator = new Generator(17);
        using (no_grad())
            foreach (var (_, lora) in AdapterFiles.LoraModules(built.Model))
            {
                using var b = randn(lora.B.shape, generator: generator).mul_(0.05);
                lora.B.copy_(b);
            }
        AdapterFiles.Save(dir, built.Model, built.Adapter!);
        return dir;
    }
}
