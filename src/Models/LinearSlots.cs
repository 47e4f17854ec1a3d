using QLoraNet.Formats;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// The replaceable linear children of one module (the attention's q/k/v/o, the MLP's gate/up/down), registered
/// under their Hugging Face names from the family record, reached by role in forward, and swappable through
/// <see cref="Replace"/>: how adapters attach (<see cref="IReplaceableLinears"/>) without reaching into fields.
/// A linear with a bias keeps it here as a frozen buffer added after the (possibly wrapped) linear, which computes
/// what a biased nn.Linear would (peft's LoRA adds its update to base(x), bias included).
/// </summary>
public sealed class LinearSlots
{
    readonly nn.Module owner;
    readonly Dictionary<string, nn.Module<Tensor, Tensor>> byName = new(StringComparer.Ordinal);
    readonly Dictionary<LinearRole, string> nameOf = new();
    readonly Dictionary<string, string> biasBuffer = new(StringComparer.Ordinal);

    public LinearSlots(nn.Module owner) => this.owner = owner;

    /// <summary>Registers <paramref name="module"/> as child <paramref name="name"/> of the owner, with an optional frozen bias (out).</summary>
    public void Add(string name, LinearRole role, nn.Module<Tensor, Tensor> module, Tensor? bias = null)
    {
        byName[name] = module;
        nameOf[role] = name;
        owner.register_module(name, module);
        if (bias is null) return;
        biasBuffer[name] = name + "_bias";
        owner.register_buffer(name + "_bias", bias.DetachFromDisposeScope().requires_grad_(false));
    }

    /// <summary>The frozen bias (out) of slot <paramref name="name"/>, or null when it has none.</summary>
    public Tensor? Bias(string name) => biasBuffer.TryGetValue(name, out var buffer) ? owner.get_buffer(buffer) : null;

    /// <summary>Slot names in registration order.</summary>
    public IEnumerable<string> Names => byName.Keys;

    public nn.Module<Tensor, Tensor> this[string name] =>
        byName.TryGetValue(name, out var m) ? m
            : throw new ArgumentException($"{owner.GetName()} has no linear '{name}'; it has {string.Join(", ", byName.Keys)}");

    /// <summary>x (..., in) -> (..., out) through the slot holding <paramref name="role"/>, plus its bias if any.</summary>
    public Tensor Call(LinearRole role, Tensor x)
    {
        string name = nameOf[role];
        var y = byName[name].call(x);
        if (!biasBuffer.TryGetValue(name, out var buffer)) return y;
        using (y) return y + owner.get_buffer(buffer)!.to(y.dtype);
    }

    /// <summary>Whether the slot holding <paramref name="role"/> can run on a tape (<see cref="Record"/>).</summary>
    public bool SupportsTape(LinearRole role) =>
        nameOf.TryGetValue(role, out var name) && byName[name] is ITapedLinear { SupportsTape: true };

    /// <summary>The compute dtype of the slot holding <paramref name="role"/>, or null when it is not a taped linear.</summary>
    public ScalarType? ComputeDType(LinearRole role) =>
        nameOf.TryGetValue(role, out var name) && byName[name] is ITapedLinear taped ? taped.ComputeDType : null;

    /// <summary><see cref="Call"/> without autograd, on a tape for a backward written out by hand
    /// (<see cref="ITapedLinear.Record"/>); the tape's output includes the bias.</summary>
    public LinearTape Record(LinearRole role, Tensor x, bool keepWeight, bool product = true)
    {
        string name = nameOf[role];
        var tape = ((ITapedLinear)byName[name]).Record(x, keepWeight, product);
        if (tape.Output is not null && biasBuffer.TryGetValue(name, out var buffer)) tape.AddToOutput(owner.get_buffer(buffer)!);
        return tape;
    }

    /// <summary>Puts <paramref name="module"/> in slot <paramref name="name"/>, in forward and in the owner's module registry alike.</summary>
    public void Replace(string name, nn.Module<Tensor, Tensor> module)
    {
        _ = this[name];
        owner.register_module(name, null!);  // null unregisters; register_module refuses to overwrite a name
        owner.register_module(name, module);
        byName[name] = module;
    }
}
