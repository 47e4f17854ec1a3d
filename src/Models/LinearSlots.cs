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

    /// <summary>
    /// residual + <see cref="Call"/>(role, x): a decoder layer's h + down(gated). Where the slot holds a bare frozen
    /// linear (no adapter, no bias, no wrapper) that can add the residual inside its product's GEMM
    /// (<see cref="FrozenLinear.AddsInProduct"/>: no autograd graph, a dense-form weight), the add is the GEMM's
    /// epilogue (<see cref="ResidualProduct"/>: one kernel fewer, rounded once); otherwise Call, then a plain add.
    /// </summary>
    /// <param name="x">(..., in)</param>
    /// <param name="residual">(..., out)</param>
    /// <returns>(..., out)</returns>
    public Tensor CallAdding(LinearRole role, Tensor x, Tensor residual)
    {
        if (AddingLinear(role, x, residual) is { } frozen) return frozen.ForwardAdding(x, residual);
        using var y = Call(role, x);
        return residual + y;
    }

    /// <summary>
    /// <see cref="CallAdding"/> on a tape (<see cref="Record"/>), the sum made as CallAdding makes it (the same op
    /// on the same values): inside the frozen linear's GEMM where CallAdding adds there, else residual + the tape's
    /// output, which is then released (a tape's backward never reads its output).
    /// </summary>
    /// <param name="x">(..., in) in the compute dtype.</param>
    /// <param name="residual">(..., out)</param>
    /// <returns>The tape (no output) and the sum (..., out) in the caller's dispose scope.</returns>
    public (LinearTape Tape, Tensor Output) RecordAdding(LinearRole role, Tensor x, Tensor residual, bool keepWeight)
    {
        if (AddingLinear(role, x, residual) is { } frozen) return frozen.RecordAdding(x, residual, keepWeight);
        var tape = Record(role, x, keepWeight);
        try
        {
            var sum = residual + tape.Output!;
            tape.ReleaseOutput();
            return (tape, sum);
        }
        catch
        {
            tape.Dispose();
            throw;
        }
    }

    /// <summary>The slot's linear when it can add <paramref name="residual"/> inside its product's GEMM, else null.</summary>
    FrozenLinear? AddingLinear(LinearRole role, Tensor x, Tensor residual)
    {
        string name = nameOf[role];
        var bare = byName[name] switch { FrozenLinear f => f, IBareFrozenLinear w => w.BareLinear, _ => null };   // a disabled adapter: its base
        return bare is not null && !biasBuffer.ContainsKey(name) && bare.AddsInProduct(x, residual) ? bare : null;
    }

    /// <summary>
    /// <see cref="Call"/> of each of <paramref name="roles"/> on one input (the attention's q/k/v): where the slots'
    /// linears can share work on it without an autograd graph (<see cref="ISharedInputLinear"/>: LoRA adapters with no
    /// dropout make their down projections one GEMM) they do; otherwise each is called in turn, as Call does.
    /// With <paramref name="stackFrozen"/>, quantized frozen linears without adapters run as one GEMM
    /// (<see cref="FrozenLinearGroup"/>; the MLP's gate and up, whose row-strided outputs the fused gated unit reads
    /// as they are; q/k/v's would be copied contiguous for RoPE, which would cost what the GEMM saves).
    /// </summary>
    /// <param name="x">(..., in)</param>
    /// <returns>(..., outᵢ) per role, biases included.</returns>
    public Tensor[] CallShared(IReadOnlyList<LinearRole> roles, Tensor x, bool stackFrozen = false)
    {
        var outputs = stackFrozen && FrozenMembers(roles, x) is { } frozen ? FrozenLinearGroup.Forward(frozen, x)
            : SharingMembers(roles) is { } members ? members[0].ForwardShared(members, x) : null;
        if (outputs is null) return [.. roles.Select(r => Call(r, x))];
        for (int i = 0; i < outputs.Length; i++)
        {
            if (Bias(nameOf[roles[i]]) is not { } bias) continue;
            using var y = outputs[i];
            outputs[i] = y + bias.to(y.dtype);
        }
        return outputs;
    }

    /// <summary>
    /// <see cref="Record"/> of each of <paramref name="roles"/> on one input, as one group with one backward: shared
    /// work where the linears can share it (<see cref="CallShared"/>), else each role's own tape. Each member's output
    /// includes its bias.
    /// </summary>
    /// <param name="x">(..., in) in the compute dtype.</param>
    /// <param name="stackFrozen">as for <see cref="CallShared"/>.</param>
    public LinearTapeGroup RecordShared(IReadOnlyList<LinearRole> roles, Tensor x, bool keepWeight, bool stackFrozen = false)
    {
        var group = stackFrozen && FrozenMembers(roles, x) is { } frozen ? FrozenLinearGroup.Record(frozen, x, keepWeight)
            : SharingMembers(roles) is { } members ? members[0].RecordShared(members, x, keepWeight) : null;
        if (group is null) return new LinearTapeGroup([.. roles.Select(r => Record(r, x, keepWeight))]);
        for (int i = 0; i < roles.Count; i++)
            if (Bias(nameOf[roles[i]]) is { } bias) group.Members[i].AddToOutput(bias);
        return group;
    }

    /// <summary>The linears of <paramref name="roles"/> when they are quantized frozen linears that can run as one GEMM on x.</summary>
    FrozenLinear[]? FrozenMembers(IReadOnlyList<LinearRole> roles, Tensor x) =>
        FrozenLinearGroup.Members([.. roles.Select(r => (object)byName[nameOf[r]])], x);

    /// <summary>The linears of <paramref name="roles"/> when each may share its input's work, else null.</summary>
    ISharedInputLinear[]? SharingMembers(IReadOnlyList<LinearRole> roles)
    {
        var modules = roles.Select(r => byName[nameOf[r]]).ToArray();
        return modules.All(m => m is ISharedInputLinear) ? [.. modules.Cast<ISharedInputLinear>()] : null;
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
