using QLoraNet.Formats;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
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
/// A source checkpoint stored pre-quantized (a `quantize` output, a native BitNet model) is merged from its stored
/// codes: each such linear is read through its layout and dequantized to fp32 (exactly the W training saw), written
/// under "{module}.weight", and the layout's other keys (weight_scale, SCB, absmax, ...) are dropped.
/// </summary>
internal sealed class MergedTensors(CheckpointReader reader, AdapterMerge merge, ScalarType dtype, BaseFormat? quantization,
    Action<string>? onTensor) : IDisposable
{
    readonly Dictionary<string, string> _sourceOf = new(StringComparer.Ordinal);  // written name -> checkpoint name
    string? _cachedSource;
    Dictionary<string, Tensor>? _cached;
    // The source's quantization_config: tells layouts that share key names apart (GPTQ/AWQ qweight, W8A8/BitNet weight_scale).
    readonly System.Text.Json.Nodes.JsonObject? _quantizationConfig = Models.QuantizedCheckpoint.QuantizationConfigOf(reader.Directory);

    public List<SafeTensors.Entry> Layout()
    {
        var layout = new List<SafeTensors.Entry>();
        var storedDone = new HashSet<string>(StringComparer.Ordinal);
        foreach (var stateName in reader.Names)
        {
            string name = stateName;
            if (StoredWeight(stateName) is { } stored)
            {
                if (!storedDone.Add(stored)) continue;           // one entry per stored linear, whatever its key count
                name = stored;
            }
            if (IsQuantized(name))
            {
                foreach (var (key, t) in QuantizedTensors(name))
                {
                    layout.Add(new SafeTensors.Entry(key, t.dtype, t.shape));
                    _sourceOf[key] = name;
                }
                DropCache();
            }
            else if (storedDone.Contains(name))
            {
                layout.Add(new SafeTensors.Entry(name, dtype, ShapeOf(name)));
                _sourceOf[name] = name;
            }
            else
            {
                var info = reader.Info(name);
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

    /// <summary>The decoder linear whose stored layout <paramref name="tensorName"/> belongs to, or null for a plain tensor.</summary>
    string? StoredWeight(string tensorName)
    {
        var arch = merge.Architecture;
        string? weight = arch.IsBaseLinearWeight(tensorName) ? tensorName
            : BaseFormats.LayoutsFor(_quantizationConfig).Select(l => l.IsStateKey(tensorName, out var w) ? w : null).FirstOrDefault(w => w != null && arch.IsBaseLinearWeight(w));
        return weight != null && Models.QuantizedCheckpoint.LayoutOf(reader, weight, _quantizationConfig) != null ? weight : null;
    }

    long[] ShapeOf(string weightName) => merge.Architecture.ExpectedTensors().First(e => e.Name == weightName).Shape;

    /// <summary>The stored codes of a pre-quantized linear, dequantized to fp32: the W its adapter was trained over.</summary>
    Tensor ReadStored(string weightName)
    {
        var layout = Models.QuantizedCheckpoint.LayoutOf(reader, weightName, _quantizationConfig)!;
        using var linear = Models.QuantizedCheckpoint.ReadLinear(reader, layout, weightName, ShapeOf(weightName), CPU, ScalarType.Float32, KernelSelection.Portable);
        return linear.DequantizeWeight(ScalarType.Float32);
    }

    Tensor ReadSource(string name) => merge.Architecture.IsBaseLinearWeight(name) && Models.QuantizedCheckpoint.LayoutOf(reader, name, _quantizationConfig) is not null
        ? ReadStored(name) : reader.Read(name);

    /// <summary>A tensor read, merged and cast; one that needs neither is handed on as read (no second copy).</summary>
    Tensor Dense(string name)
    {
        var raw = ReadSource(name);
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
        var raw = ReadSource(source);
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
