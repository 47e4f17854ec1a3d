using System.CommandLine;
using QLoraNet.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// `logits`: the model's logits for given token ids, written as safetensors ("logits", (1, T, vocab) fp32). For
/// checking parity with other implementations (scripts/gpu/peft_interop.py compares them with transformers + peft).
/// </summary>
public static class LogitsCommand
{
    public static Command Create(TextWriter stdout)
    {
        var modelOptions = new ModelOptions();
        var ids = new Option<string>("--ids") { Description = "comma-separated token ids, e.g. 1,450,377,744", Required = true };
        var output = new Option<string>("--out") { Description = "safetensors file to write", Required = true };
        var cmd = new Command("logits", "write the logits for given token ids (parity checks against other implementations)");
        modelOptions.AddTo(cmd);
        cmd.Options.Add(ids);
        cmd.Options.Add(output);
        cmd.SetAction(parsed =>
        {
            var tokenIds = parsed.GetValue(ids)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(s => long.TryParse(s, out long v) ? v : throw new FormatException($"--ids: '{s}' is not a token id")).ToArray();
            using var loaded = modelOptions.Load(parsed);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var input = tensor(tokenIds, device: loaded.Device).unsqueeze(0);               // (1, T)
            var logits = loaded.Model.forward(input, null, null, null).to(ScalarType.Float32).cpu(); // (1, T, vocab)
            SafeTensors.Write(parsed.GetValue(output)!, new Dictionary<string, Tensor> { ["logits"] = logits });
            stdout.WriteLine($"wrote {parsed.GetValue(output)} ({string.Join("x", logits.shape)})");
            return 0;
        });
        return cmd;
    }
}
