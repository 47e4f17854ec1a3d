using QLoraNet.Formats;
using QLoraNet.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// A module tree shaped like a Llama causal LM (model.layers.i.self_attn.q_proj ..., mlp.gate_proj ..., lm_head)
/// with dense test bases, its linears in <see cref="LinearSlots"/> like the real model's, so that LoRA attaches
/// through the same seam (<see cref="IReplaceableLinears"/>); forward uses every linear so that a swapped-in
/// module shows up in the output.
/// </summary>
public sealed class TinyTestModel : nn.Module<Tensor, Tensor>, IReplaceableLinears
{
    private readonly TinyTestBody model;
    private readonly LinearSlots head;
    private readonly Dictionary<string, (LinearSlots Slots, string Name)> slots = new();
    private readonly List<string> paths = [];

    public TinyTestModel(int layers = 2, int hidden = 8, int intermediate = 12, int vocab = 10, long seed = 1)
        : base(nameof(TinyTestModel))
    {
        model = new TinyTestBody(layers, hidden, intermediate, seed);
        RegisterComponents();
        head = new LinearSlots(this);
        head.Add("lm_head", LinearRole.Output, DenseTestLinear.Random(hidden, vocab, seed + 1000));
        for (int i = 0; i < layers; i++)
        {
            foreach (var name in model.Layers[i].Attention.Slots.Names) Add($"model.layers.{i}.self_attn.{name}", model.Layers[i].Attention.Slots, name);
            foreach (var name in model.Layers[i].Mlp.Slots.Names) Add($"model.layers.{i}.mlp.{name}", model.Layers[i].Mlp.Slots, name);
        }
        Add("lm_head", head, "lm_head");
    }

    public IReadOnlyList<string> LinearPaths => paths;
    public string? HeadPath => "lm_head";
    public nn.Module<Tensor, Tensor> GetLinear(string path) => slots[path].Slots[slots[path].Name];
    public void ReplaceLinear(string path, nn.Module<Tensor, Tensor> module) => slots[path].Slots.Replace(slots[path].Name, module);

    public override Tensor forward(Tensor x) => head.Call(LinearRole.Output, model.forward(x));

    void Add(string path, LinearSlots owner, string name)
    {
        slots[path] = (owner, name);
        paths.Add(path);
    }
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

    public ModuleList<TinyTestLayer> Layers => layers;

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

    public TinyTestAttention Attention => self_attn;
    public TinyTestMlp Mlp => mlp;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.forward(x);
        return (h + mlp.forward(h)).MoveToOuterDisposeScope();
    }
}

public sealed class TinyTestAttention : nn.Module<Tensor, Tensor>
{
    public TinyTestAttention(int hidden, long seed) : base(nameof(TinyTestAttention))
    {
        Slots = new LinearSlots(this);
        Slots.Add("q_proj", LinearRole.Query, DenseTestLinear.Random(hidden, hidden, seed + 1));
        Slots.Add("k_proj", LinearRole.Key, DenseTestLinear.Random(hidden, hidden, seed + 2));
        Slots.Add("v_proj", LinearRole.Value, DenseTestLinear.Random(hidden, hidden, seed + 3));
        Slots.Add("o_proj", LinearRole.Output, DenseTestLinear.Random(hidden, hidden, seed + 4));
    }

    public LinearSlots Slots { get; }

    // Not attention, only a cheap function of all four projections.
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var mixed = Slots.Call(LinearRole.Query, x) * 0.1 + Slots.Call(LinearRole.Key, x) * 0.1 + Slots.Call(LinearRole.Value, x) * 0.1;
        return Slots.Call(LinearRole.Output, torch.tanh(mixed)).mul(0.1).MoveToOuterDisposeScope();
    }
}

public sealed class TinyTestMlp : nn.Module<Tensor, Tensor>
{
    public TinyTestMlp(int hidden, int intermediate, long seed) : base(nameof(TinyTestMlp))
    {
        Slots = new LinearSlots(this);
        Slots.Add("gate_proj", LinearRole.Gate, DenseTestLinear.Random(hidden, intermediate, seed + 1));
        Slots.Add("up_proj", LinearRole.Up, DenseTestLinear.Random(hidden, intermediate, seed + 2));
        Slots.Add("down_proj", LinearRole.Down, DenseTestLinear.Random(intermediate, hidden, seed + 3));
    }

    public LinearSlots Slots { get; }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.silu(Slots.Call(LinearRole.Gate, x)) * Slots.Call(LinearRole.Up, x);
        return Slots.Call(LinearRole.Down, h).mul(0.1).MoveToOuterDisposeScope();
    }
}
