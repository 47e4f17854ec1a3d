using QLoraNet.Formats;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// The tensors of a merged checkpoint (<see cref="MergedCheckpoint"/>) in checkpoint order, produced on demand:
/// each read, folded with <see cref="AdapterMerge.Apply"/> and cast to the output dtype. With a quantized output, a
/// decoder-layer linear becomes the tensors of its format's checkpoint layout (bitsandbytes: weight, absmax,
/// quant_map, ..., quant_state); the header needs their sizes up front and the quant_state's JSON length depends on
/// the quantized values (nested_offset), so <see cref="Layout"/> quantizes each linear once to measure it and
/// <see cref="Produce"/> quantizes it again: twice the compute, never more than one weight in memory.
/// </summary>
internal sealed class MergedTensors(CheckpointReader reader, AdapterMerge merge, ScalarType dtype, BaseFormat? quantization,
    Action<string>? onTensor) : IDisposable
{
    readonly Dictionary<string, string> _sourceOf = new(StringComparer.Ordinal);  // written name -> checkpoint name
    string? _cachedSource;
    Dictionary<string, Tensor>? _cached;

    public List<SafeTensors.Entry> Layout()
    {
        var layout = new List<SafeTensors.Entry>();
        foreach (var name in reader.Names)
        {
            var info = reader.Info(name);
            if (IsQuantized(name))
            {
                foreach (var (key, t) in QuantizedTensors(name))
                {
                    layout.Add(new SafeTensors.Entry(key, t.dtype, t.shape));
                    _sourceOf[key] = name;
                }
                DropCache();
            }
            else
            {
                layout.Add(new SafeTensors.Entry(name, IsFloat(info.DType) ? dtype : info.DType, info.Shape));
                _sourceOf[name] = name;
            }
        }
        return layout;
    }

    public Tensor Produce(string key)
    {
        string source = _sourceOf[key];
        onTensor?.Invoke(key);
        // All tensors of one 4-bit projection are consecutive in the layout: quantized on the first, handed out after.
        return key == source && !IsQuantized(source) ? Dense(source) : QuantizedTensors(source)[key].alias();
    }

    bool IsQuantized(string source) => quantization != null && merge.Architecture.IsBaseLinearWeight(source);

    /// <summary>A tensor read, merged and cast; one that needs neither is handed on as read (no second copy).</summary>
    Tensor Dense(string name)
    {
        var raw = reader.Read(name);
        if (!IsFloat(raw.dtype)) return raw;
        var merged = merge.Apply(name, raw);
        if (!ReferenceEquals(merged, raw)) raw.Dispose();
        if (merged.dtype == dtype) return merged;
        using (merged) return merged.to(dtype);
    }

    Dictionary<string, Tensor> QuantizedTensors(string source)
    {
        if (_cachedSource == source) return _cached!;
        DropCache();
        using var scope = NewDisposeScope();
        var raw = reader.Read(source);
        var merged = merge.Apply(source, raw).to(dtype);   // bitsandbytes records the dtype it quantized from
        var tensors = quantization!.Layout!.Write(merged, quantization, source);
        foreach (var t in tensors.Values) t.MoveToOuterDisposeScope();
        (_cachedSource, _cached) = (source, tensors);
        return tensors;
    }

    void DropCache()
    {
        if (_cached != null) foreach (var t in _cached.Values) t.Dispose();
        (_cachedSource, _cached) = (null, null);
    }

    static bool IsFloat(ScalarType t) => t is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64;

    public void Dispose() => DropCache();
}
