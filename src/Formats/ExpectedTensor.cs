namespace QLoraNet.Formats;

/// <summary>What a checkpoint tensor is to the model: which part builds it, and therefore how it is stored.</summary>
public enum TensorRole
{
    /// <summary>The token embedding [vocab, hidden].</summary>
    Embedding,

    /// <summary>A decoder-layer linear's weight [out, in]: the frozen base a format stores (quantize-on-load, `quantize`).</summary>
    Linear,

    /// <summary>A decoder-layer linear's bias [out], kept dense.</summary>
    Bias,

    /// <summary>A norm weight [hidden].</summary>
    Norm,

    /// <summary>The untied output head [vocab, hidden]: a linear the base formats leave dense.</summary>
    Head,
}

/// <summary>One tensor a checkpoint of a <see cref="ModelArchitecture"/> must hold, by Hugging Face name, with the shape config.json implies.</summary>
public sealed record ExpectedTensor(string Name, long[] Shape, TensorRole Role)
{
    /// <summary>The module path of a linear or head weight ("model.layers.0.self_attn.q_proj" for "...q_proj.weight").</summary>
    public string ModulePath => Name.EndsWith(".weight", StringComparison.Ordinal) ? Name[..^".weight".Length] : Name;
}
