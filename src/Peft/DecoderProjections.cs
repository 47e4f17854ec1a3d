namespace QLoraNet.Peft;

/// <summary>
/// Which checkpoint tensors are the weights of a decoder layer's projections (q/k/v/o, gate/up/down): the linears
/// that <c>LinearPolicies.Quantized</c> stores in the frozen base format and that bitsandbytes' load_in_4bit turns
/// into Linear4bit. The output head and the embedding stay dense in both, so merge treats them the same way.
/// </summary>
public static class DecoderProjections
{
    const string LayersPrefix = "model.layers.";
    const string Suffix = "_proj.weight";

    public static bool Contains(string hfName, IReadOnlyList<long> shape) =>
        shape.Count == 2
        && hfName.StartsWith(LayersPrefix, StringComparison.Ordinal)
        && hfName.EndsWith(Suffix, StringComparison.Ordinal);
}
