using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// A module tree shaped like a Llama causal LM (model.layers.i.self_attn.q_proj ..., mlp.gate_proj ..., lm_head)
/// with dense test bases; forward uses every linear so that a swapped-in module shows up in the output.
/// </summary>
public sealed class TinyTestModel : nn.Module<Tensor, Tensor>
{
    private readonly TinyTestBody model;
    private nn.Module<Tensor, Tensor> lm_head;

    public TinyTestModel(int layers = 2, int hidden = 8, int intermediate = 12, int vocab = 10, long seed = 1)
        : base(nameof(TinyTestModel))
    {
        model = new TinyTestBody(layers, hidden, intermediate, seed);
        lm_head = DenseTestLinear.Random(hidden, vocab, seed + 1000);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => lm_head.forward(model.forward(x));
}

public sealed class TinyTestBody : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<TinyTestLayer> layers;
    private readonly Parameter norm;

    public TinyTestBody(int layerCount, int hidden, int intermediate, long seed) : base(nameof(TinyTestBody))
    {
        layers = new ModuleList<TinyTestLayer>(Enumerable.Range(0, layerCount)
            .Select(i => new TinyTestLayer(hidden, intermediate, seed + 100 * i)).ToArray());
        norm = new Parameter(torch.ones(hidden));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x;
        foreach (var layer in layers) h = layer.forward(h);
        return (h * norm).MoveToOuterDisposeScope();
    }
}

public sealed class TinyTestLayer : nn.Module<Tensor, Tensor>
{
    private readonly TinyTestAttention self_attn;
    private readonly TinyTestMlp mlp;

    public TinyTestLayer(int hidden, int intermediate, long seed) : base(nameof(TinyTestLayer))
    {
        self_attn = new TinyTestAttention(hidden, seed);
        mlp = new TinyTestMlp(hidden, intermediate, seed + 10);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.forward(x);
        return (h + mlp.forward(h)).MoveToOuterDisposeScope();
    }
}

public sealed class TinyTestAttention : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> q_proj, k_proj, v_proj, o_proj;

    public TinyTestAttention(int hidden, long seed) : base(nameof(TinyTestAttention))
    {
        q_proj = DenseTestLinear.Random(hidden, hidden, seed + 1);
        k_proj = DenseTestLinear.Random(hidden, hidden, seed + 2);
        v_proj = DenseTestLinear.Random(hidden, hidden, seed + 3);
        o_proj = DenseTestLinear.Random(hidden, hidden, seed + 4);
        RegisterComponents();
    }

    // Not attention, only a cheap function of all four projections.
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var mixed = q_proj.forward(x) * 0.1 + k_proj.forward(x) * 0.1 + v_proj.forward(x) * 0.1;
        return o_proj.forward(torch.tanh(mixed)).mul(0.1).MoveToOuterDisposeScope();
    }
}

public sealed class TinyTestMlp : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> gate_proj, up_proj, down_proj;

    public TinyTestMlp(int hidden, int intermediate, long seed) : base(nameof(TinyTestMlp))
    {
        gate_proj = DenseTestLinear.Random(hidden, intermediate, seed + 1);
        up_proj = DenseTestLinear.Random(hidden, intermediate, seed + 2);
        down_proj = DenseTestLinear.Random(intermediate, hidden, seed + 3);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.silu(gate_proj.forward(x)) * up_proj.forward(x);
        return down_proj.forward(h).mul(0.1).MoveToOuterDisposeScope();
    }
}
