namespace QLoraNet.Formats;

// The closed sets a ModelArchitecture is described with. A member exists once some family's config.json can
// produce it; the Models layer decides which it computes (QLoraNet.Models.ArchitectureSupport) and refuses the
// rest by name, so a family that needs a new numeric adds its member here and its arithmetic there.

/// <summary>How a decoder normalises its hidden states.</summary>
public enum NormKind
{
    /// <summary>RMSNorm, y = w · x / rms(x) (Llama, Mistral, Qwen2).</summary>
    Rms,

    /// <summary>RMSNorm with the scale stored as an offset from one, y = (1 + w) · x / rms(x), computed in fp32 (Gemma).</summary>
    RmsOffsetOne,
}

/// <summary>The nonlinearity of the gated MLP down(act(gate(x)) · up(x)), named as config.json's hidden_act.</summary>
public enum Activation
{
    /// <summary>"silu": SwiGLU (Llama, Mistral, Qwen2).</summary>
    Silu,

    /// <summary>"gelu_pytorch_tanh": GeGLU with the tanh approximation of GELU (Gemma).</summary>
    GeluTanh,

    /// <summary>"relu2": squared ReLU (BitNet b1.58).</summary>
    ReluSquared,
}

/// <summary>What a decoder-layer linear computes; the model wires it by role, checkpoints name it by path.</summary>
public enum LinearRole { Query, Key, Value, Output, Gate, Up, Down }

/// <summary>Where a decoder-layer norm sits: before/after attention, before/after the MLP.</summary>
public enum NormRole { PreAttention, PostAttention, PreMlp, PostMlp }

/// <summary>How RoPE frequencies are rescaled for long context (config.json's rope_type); the families refuse the
/// other types ("linear", "dynamic", "yarn", "longrope", ...) by name.</summary>
public enum RopeScalingKind
{
    /// <summary>"default": theta^(-2i/d) as in RoFormer.</summary>
    None,

    /// <summary>"llama3": Llama 3.1's smooth per-frequency rescaling (<see cref="Llama3RopeScaling"/>).</summary>
    Llama3,
}
