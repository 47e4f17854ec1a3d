using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A <see cref="FourBitWeight"/> as the tensors bitsandbytes puts in a state dict for a Linear4bit weight
/// (Params4bit + QuantState.as_dict(packed=True)), so checkpoints interchange with transformers/peft:
/// <code>
///   {prefix}weight                                 uint8 (ceil(numel/2), 1)  packed codes
///   {prefix}weight.absmax                          fp32 (nBlocks), or uint8 (nBlocks) when double-quantized
///   {prefix}weight.quant_map                       fp32 (16)   the 4-bit codebook
///   {prefix}weight.nested_absmax                   fp32 (ceil(nBlocks/256))       double-quantized only
///   {prefix}weight.nested_quant_map                fp32 (256)  the dynamic map    double-quantized only
///   {prefix}weight.quant_state.bitsandbytes__nf4   uint8 bytes of json.dumps({"quant_type", "blocksize", "dtype",
///                                                  "shape", ["nested_blocksize", "nested_dtype", "nested_offset"]})
/// </code>
/// Pure: tensors in, tensors out; file IO lives in Formats.
/// </summary>
public static class FourBitCheckpoint
{
    const string QuantStateKey = "weight.quant_state.bitsandbytes__";

    /// <summary>True when the dictionary holds a bitsandbytes 4-bit weight under <paramref name="prefix"/>.</summary>
    public static bool Contains(IReadOnlyDictionary<string, Tensor> tensors, string prefix) =>
        tensors.ContainsKey(prefix + QuantStateKey + "nf4") || tensors.ContainsKey(prefix + QuantStateKey + "fp4");

    /// <summary>The tensors bitsandbytes writes for this weight, keys prefixed (e.g. "model.layers.0.self_attn.q_proj.").</summary>
    public static Dictionary<string, Tensor> ToTensors(FourBitWeight w, string prefix)
    {
        var device = w.Packed.device;
        var d = new Dictionary<string, Tensor>
        {
            [prefix + "weight"] = w.Packed.view(-1, 1),
            [prefix + "weight.absmax"] = w.Scales is DoubleQuantizedScales dq ? dq.Codes : ((PlainScales)w.Scales).Absmax,
            [prefix + "weight.quant_map"] = tensor(FourBitCodebook.Values(w.Type), device: device),
        };
        if (w.Scales is DoubleQuantizedScales nested)
        {
            d[prefix + "weight.nested_absmax"] = nested.NestedAbsmax;
            d[prefix + "weight.nested_quant_map"] = tensor(DynamicMap.Values(), device: device);
        }
        d[prefix + QuantStateKey + FourBitCodebook.Name(w.Type)] = tensor(Encoding.UTF8.GetBytes(QuantStateJson(w)));
        return d;
    }

    /// <summary>
    /// Reads the weight under <paramref name="prefix"/>; a missing key or a quant_state that does not fit the
    /// tensors is a one-line error naming the key.
    /// </summary>
    public static FourBitWeight FromTensors(IReadOnlyDictionary<string, Tensor> tensors, string prefix)
    {
        var (stateKey, type) = FindQuantState(tensors, prefix);
        using var json = ParseJson(tensors[stateKey], stateKey);
        var state = json.RootElement;

        string quantType = String(state, "quant_type", stateKey);
        if (quantType != FourBitCodebook.Name(type))
            throw Bad(stateKey, $"quant_type '{quantType}' does not match the key suffix '{FourBitCodebook.Name(type)}'");
        int blockSize = Int(state, "blocksize", stateKey);
        var dtype = DTypeFromName(String(state, "dtype", stateKey), stateKey);
        long[] shape = Member(state, "shape", stateKey).EnumerateArray().Select(e => e.GetInt64()).ToArray();
        long numel = QuantInputChecks.Numel(shape);
        if (blockSize < 2 || (blockSize & (blockSize - 1)) != 0)
            throw Bad(stateKey, $"blocksize {blockSize} is not a power of two");

        var packed = Require(tensors, prefix + "weight", ScalarType.Byte, QuantInputChecks.CeilDiv(numel, 2)).reshape(-1);
        long blocks = QuantInputChecks.CeilDiv(numel, blockSize);
        RequireEqual(Require(tensors, prefix + "weight.quant_map", ScalarType.Float32, 16), FourBitCodebook.Values(type),
            prefix + "weight.quant_map", $"the {FourBitCodebook.Name(type)} codebook");

        BlockScales scales;
        if (state.TryGetProperty("nested_blocksize", out _))
        {
            int nestedBlockSize = Int(state, "nested_blocksize", stateKey);
            string nestedDType = String(state, "nested_dtype", stateKey);
            if (nestedDType != "float32")
                throw Bad(stateKey, $"nested_dtype '{nestedDType}' is not supported (expected float32)");
            float offset = (float)Member(state, "nested_offset", stateKey).GetDouble();
            var codes = Require(tensors, prefix + "weight.absmax", ScalarType.Byte, blocks);
            var nestedAbsmax = Require(tensors, prefix + "weight.nested_absmax", ScalarType.Float32,
                QuantInputChecks.CeilDiv(blocks, nestedBlockSize));
            RequireEqual(Require(tensors, prefix + "weight.nested_quant_map", ScalarType.Float32, 256), DynamicMap.Values(),
                prefix + "weight.nested_quant_map", "bitsandbytes' signed dynamic map");
            scales = new DoubleQuantizedScales(codes, nestedAbsmax, offset, nestedBlockSize);
        }
        else
        {
            scales = new PlainScales(Require(tensors, prefix + "weight.absmax", ScalarType.Float32, blocks));
        }
        return new FourBitWeight(type, packed, scales, shape, blockSize, dtype);
    }

    /// <summary>json.dumps of QuantState.as_dict's non-tensor items, byte for byte (", " and ": " separators).</summary>
    internal static string QuantStateJson(FourBitWeight w)
    {
        var sb = new StringBuilder();
        sb.Append($"{{\"quant_type\": \"{FourBitCodebook.Name(w.Type)}\", \"blocksize\": {w.BlockSize}, ");
        sb.Append($"\"dtype\": \"{DTypeName(w.DType)}\", \"shape\": [{string.Join(", ", w.Shape)}]");
        if (w.Scales is DoubleQuantizedScales dq)
            sb.Append($", \"nested_blocksize\": {dq.NestedBlockSize}, \"nested_dtype\": \"float32\", \"nested_offset\": {PythonFloat.Repr(dq.Offset)}");
        return sb.Append('}').ToString();
    }

    static (string Key, FourBitType Type) FindQuantState(IReadOnlyDictionary<string, Tensor> tensors, string prefix)
    {
        var found = new[] { FourBitType.Nf4, FourBitType.Fp4 }
            .Select(t => (Key: prefix + QuantStateKey + FourBitCodebook.Name(t), Type: t))
            .Where(k => tensors.ContainsKey(k.Key)).ToArray();
        return found.Length switch
        {
            1 => found[0],
            0 => throw new InvalidDataException($"missing '{prefix}{QuantStateKey}nf4' (or __fp4): '{prefix}weight' is not a bitsandbytes 4-bit weight"),
            _ => throw new InvalidDataException($"both '{found[0].Key}' and '{found[1].Key}' are present; a 4-bit weight has exactly one quant_state"),
        };
    }

    static JsonDocument ParseJson(Tensor bytes, string key)
    {
        if (bytes.dtype != ScalarType.Byte)
            throw Bad(key, $"dtype {bytes.dtype}, expected uint8 bytes of JSON");
        try { return JsonDocument.Parse(bytes.cpu().data<byte>().ToArray()); }
        catch (JsonException e) { throw Bad(key, $"not valid JSON ({e.Message.Split('\n')[0]})"); }
    }

    static JsonElement Member(JsonElement state, string name, string key) =>
        state.TryGetProperty(name, out var v) ? v : throw Bad(key, $"has no \"{name}\"");

    static string String(JsonElement state, string name, string key) =>
        Member(state, name, key) is { ValueKind: JsonValueKind.String } v ? v.GetString()! : throw Bad(key, $"\"{name}\" is not a string");

    static int Int(JsonElement state, string name, string key) =>
        Member(state, name, key) is { ValueKind: JsonValueKind.Number } v && v.TryGetInt32(out int i) ? i : throw Bad(key, $"\"{name}\" is not an integer");

    static Tensor Require(IReadOnlyDictionary<string, Tensor> tensors, string key, ScalarType dtype, long numel)
    {
        if (!tensors.TryGetValue(key, out var t))
            throw new InvalidDataException($"missing '{key}' required by its quant_state");
        if (t.dtype != dtype)
            throw Bad(key, $"dtype {t.dtype}, expected {dtype}");
        if (t.numel() != numel)
            throw Bad(key, $"{t.numel()} elements, but its quant_state implies {numel}");
        return t.reshape(-1);
    }

    static void RequireEqual(Tensor actual, float[] expected, string key, string what)
    {
        var a = actual.cpu().data<float>().ToArray();
        for (int i = 0; i < a.Length; i++)
            if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(expected[i]))
                throw Bad(key, $"entry {i} is {a[i]}, not {expected[i]} of {what}; this reader supports only bitsandbytes' own maps");
    }

    static InvalidDataException Bad(string key, string what) => new($"'{key}': {what}");

    /// <summary>bitsandbytes writes str(torch.dtype).strip("torch."): "float32", "bfloat16", "float16".</summary>
    static string DTypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => throw new ArgumentException($"4-bit weights come from fp32/bf16/fp16 weights, not {dtype}"),
    };

    static ScalarType DTypeFromName(string name, string key) => name switch
    {
        "float32" => ScalarType.Float32,
        "bfloat16" => ScalarType.BFloat16,
        "float16" => ScalarType.Float16,
        _ => throw Bad(key, $"dtype '{name}' is not float32, bfloat16 or float16"),
    };
}
