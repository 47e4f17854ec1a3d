using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>Lists and counts the trainable parameters of a model.</summary>
public static class TrainableParameters
{
    /// <summary>Names (as in named_parameters) of the parameters that require grad, in model order.</summary>
    public static IReadOnlyList<string> Names(nn.Module model) =>
        model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToList();

    public static ParameterCount Count(nn.Module model)
    {
        // A frozen linear may keep its weight packed (NF4: half a byte per element, plus scales) in buffers or
        // uint8 parameters; its logical size is the dense matrix it stands for.
        var frozen = model.named_modules().Where(m => m.module is FrozenLinear)
            .Select(m => (prefix: m.name + ".", linear: (FrozenLinear)m.module)).ToList();
        long total = frozen.Sum(f => f.linear.OutFeatures * f.linear.InFeatures);
        long trainable = 0;
        foreach (var (name, parameter) in model.named_parameters())
        {
            if (parameter.requires_grad) trainable += parameter.numel();
            if (!frozen.Any(f => name.StartsWith(f.prefix, StringComparison.Ordinal))) total += parameter.numel();
        }
        return new ParameterCount(trainable, total);
    }
}
