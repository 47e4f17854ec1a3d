using QLoraNet.Quant;

namespace QLoraNet.Tests.Quant;

/// <summary>The two ways a checkpoint layout names a linear's tensors, each read in both directions.</summary>
[Trait("tier", "unit")]
public class StateKeysTests
{
    const string Weight = "model.layers.0.self_attn.q_proj.weight";

    [Fact]
    public void Keys_beside_the_weight_are_named_from_the_module()
    {
        var keys = StateKeys.Beside(withWeight: false, "qweight", "scales");
        Assert.Equal("model.layers.0.self_attn.q_proj.qweight", keys.Key(Weight, "qweight"));
        Assert.Equal("model.layers.0.self_attn.q_proj.qweight", keys.Key("model.layers.0.self_attn.q_proj", "qweight"));
        Assert.Equal(["model.layers.0.self_attn.q_proj.scales"], keys.Of(Weight, k => k.EndsWith(".scales")));
        Assert.Equal(["model.layers.0.self_attn.q_proj.qweight", "model.layers.0.self_attn.q_proj.scales"], keys.Of(Weight, _ => true));

        Assert.True(keys.IsStateKey("model.layers.0.self_attn.q_proj.scales", out var w));
        Assert.Equal(Weight, w);
        Assert.False(keys.IsStateKey(Weight, out w));                                   // no weight of its own
        Assert.False(keys.IsStateKey("model.layers.0.self_attn.q_projscales", out _));   // the dot belongs to the name
        Assert.Equal("", w);
    }

    [Fact]
    public void Keys_after_the_weight_keep_the_weight_first_and_need_the_weight_key_before_them()
    {
        var keys = StateKeys.After(withWeight: true, ".absmax", "_scale");
        Assert.Equal([Weight, Weight + ".absmax", Weight + "_scale"], keys.Of(Weight, _ => true));
        Assert.Equal([Weight], keys.Of(Weight, k => k == Weight));

        Assert.True(keys.IsStateKey(Weight + ".absmax", out var w));
        Assert.Equal(Weight, w);
        Assert.True(keys.IsStateKey(Weight + "_scale", out w));
        Assert.Equal(Weight, w);
        Assert.False(keys.IsStateKey(Weight, out _));
        Assert.False(keys.IsStateKey("model.layers.0.input_layernorm.absmax", out _));   // not after a weight key
    }
}
