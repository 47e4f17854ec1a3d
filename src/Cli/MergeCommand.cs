using System.CommandLine;
using QLoraNet.Formats;
using QLoraNet.Peft;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// `merge`: folds a peft LoRA adapter into its base model and writes a complete Hugging Face checkpoint
/// (W' = dequant(W) + scaling·B·A per adapted module, see <see cref="AdapterMerge"/> and <see cref="MergedCheckpoint"/>).
/// </summary>
public static class MergeCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face Llama directory the adapter was trained on", Required = true };
        var adapter = new Option<string>("--adapter") { Description = "peft LoRA adapter directory (adapter_config.json, adapter_model.safetensors)", Required = true };
        var output = new Option<string>("--out") { Description = "output directory for the merged checkpoint", Required = true };
        var dtype = new Option<string?>("--dtype") { Description = "dtype of the written weights: bf16 | fp16 | fp32 (default: the checkpoint's)" };
        var baseFormat = new Option<string?>("--base") { Description = $"base format the adapter was trained on (QLoRA: nf4-dq; {BaseFormats.Syntax}); W is quantized and dequantized in it before B·A is added. Default: the adapter's qloranet.json, else none" };
        var quantization = new Option<string>("--quantization") { Description = "write the merged decoder linears quantized, in a format with a checkpoint layout: none | nf4[-dq] | fp4[-dq] (bitsandbytes 4-bit) | llm-int8[-t<T>] (bitsandbytes 8-bit) | hqq2|3|4|8[-g<N>] (hqq) | ternary (BitNet)", DefaultValueFactory = _ => "none" };
        var shardSize = new Option<string>("--max-shard-size") { Description = "largest safetensors shard, e.g. 5GB, 500MB, 2GiB", DefaultValueFactory = _ => "5GB" };
        var overwrite = new Option<bool>("--overwrite") { Description = "replace a non-empty --out (only after the new checkpoint is complete)" };
        var allowNonFinite = new Option<bool>("--allow-non-finite-weights") { Description = "merge base weights holding NaN/Inf instead of refusing them" };
        var noTokenizer = new Option<bool>("--no-tokenizer") { Description = "write the merged weights even though --model has no tokenizer (the output then needs one copied in)" };
        dtype.AcceptOnlyFromAmong("bf16", "fp16", "fp32");

        var cmd = new Command("merge", "merge a LoRA adapter into its base model and write a Hugging Face checkpoint");
        foreach (var o in new Option[] { model, adapter, output, dtype, baseFormat, quantization, shardSize, overwrite, allowNonFinite, noTokenizer }) cmd.Options.Add(o);
        cmd.SetAction(pr =>
        {
            // Ctrl-C stops between two tensors; the merge then deletes its temporary directory (a second Ctrl-C kills).
            using var cts = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                if (cts.IsCancellationRequested) return;
                e.Cancel = true;
                cts.Cancel();
            };
            var options = new MergeOptions(
                DType: ParseDType(pr.GetValue(dtype)),
                BaseFormat: AdapterBase.Resolve(pr, baseFormat, pr.GetValue(adapter), "none"),
                Quantization: ParseQuantization(pr.GetValue(quantization)!),
                MaxShardBytes: ShardSize.Parse(pr.GetValue(shardSize)!),
                Overwrite: pr.GetValue(overwrite),
                OnTensor: _ => cts.Token.ThrowIfCancellationRequested(),
                AllowNonFiniteWeights: pr.GetValue(allowNonFinite),
                AllowNoTokenizer: pr.GetValue(noTokenizer));
            LibTorchProbe.EnsureLoaded();
            string outDir = pr.GetValue(output)!;
            Console.CancelKeyPress += onCancel;
            try
            {
                var summary = MergedCheckpoint.Write(pr.GetValue(model)!, pr.GetValue(adapter)!, outDir, options);
                string format = options.Quantization is null ? MergedModelConfig.DTypeName(summary.DType) : $"{options.Quantization} + {MergedModelConfig.DTypeName(summary.DType)}";
                stdout.WriteLine($"merged {summary.MergedModules} LoRA modules; wrote {outDir}: {summary.Tensors} tensors ({format}) in {summary.Shards.Count} shard(s), {summary.Bytes / 1e6:F1} MB");
                if (ModelFamilies.Load(pr.GetValue(model)!).TernaryLinears)
                    pr.InvocationConfiguration.Error.WriteLine(
                        "warning: a BitNet model computes with ternary linears, so W + s·B·A is ternarised again (here or at load) and most of the adapter's effect is lost (docs/QUANTIZATION.md); serve the adapter unmerged (generate/eval --adapter)");
                if (!MergedCheckpoint.HasTokenizer(outDir))
                    stdout.WriteLine($"note: {outDir} has no tokenizer (--no-tokenizer): copy one ({string.Join(" or ", MergedCheckpoint.TokenizerFiles)}) in before loading it");
                return 0;
            }
            catch (OperationCanceledException)
            {
                stdout.WriteLine($"interrupted: nothing written to {outDir}");
                return CliApp.ExitInterrupted;
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
        });
        return cmd;
    }

    static ScalarType? ParseDType(string? name) => name switch
    {
        null => null,
        "bf16" => ScalarType.BFloat16,
        "fp16" => ScalarType.Float16,
        _ => ScalarType.Float32,
    };

    /// <summary>
    /// A format whose checkpoint layout transformers loads: bitsandbytes 4-bit at its only loadable sizes (blocksize 64,
    /// nested 256), bitsandbytes 8-bit, hqq, BitNet ternary.
    /// </summary>
    static BaseFormat? ParseQuantization(string text) => ModelOptions.ParseFormat(text, "--quantization") switch
    {
        { KeepsCheckpointDType: true } => null,
        FourBitFormat { BlockSize: FourBitWeight.DefaultBlockSize, NestedBlockSize: DoubleQuantizedScales.DefaultNestedBlockSize } f => f,
        LlmInt8Format or HqqFormat or TernaryFormat => ModelOptions.ParseFormat(text, "--quantization"),
        var other => throw new ArgumentException($"--quantization '{text}' ({other}) cannot be written for transformers; use none, nf4, nf4-dq, fp4, fp4-dq, llm-int8, hqq<bits> or ternary"),
    };
}
