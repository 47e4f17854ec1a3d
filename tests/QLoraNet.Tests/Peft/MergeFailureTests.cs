using QLoraNet.Formats;
using QLoraNet.Peft;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>A merge either writes a complete checkpoint or leaves nothing behind; bad adapters fail before writing.</summary>
[Trait("tier", "unit")]
public class MergeFailureTests
{
    const string Q0 = "model.layers.0.self_attn.q_proj";

    /// <summary>An adapter with the given factors for <see cref="Q0"/>-like modules and r in adapter_config.json.</summary>
    static string WriteAdapter(string dir, int configRank, params (string Key, long[] Shape)[] factors)
    {
        Directory.CreateDirectory(dir);
        new AdapterConfig(new LoraSettings(R: configRank, Alpha: 8, Dropout: 0, TargetModules: ["q_proj"])).Save(dir);
        SafeTensors.Write(Path.Combine(dir, AdapterFiles.WeightsFileName),
            factors.Select(f => new KeyValuePair<string, Tensor>(f.Key, randn(f.Shape))).ToList());
        return dir;
    }

    static string A(string module) => AdapterKeys.ToPeft(module, AdapterKeys.A);
    static string B(string module) => AdapterKeys.ToPeft(module, AdapterKeys.B);

    static string Refused(string adapter, TempDir tmp)
    {
        var e = Assert.ThrowsAny<Exception>(() => MergedCheckpoint.Write(Paths.TinyModel, adapter, tmp["out"], new MergeOptions()));
        Assert.False(Directory.Exists(tmp["out"]));
        Assert.Equal(["adapter"], Directory.GetFileSystemEntries(tmp.Path).Select(p => Path.GetFileName(p)!));  // no temp dir either
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Fact]
    public void A_module_the_model_does_not_have_is_refused_by_key()
    {
        using var tmp = Paths.Temp();
        const string missing = "model.layers.9.self_attn.q_proj";
        var msg = Refused(WriteAdapter(tmp["adapter"], 2, (A(missing), [2, 256]), (B(missing), [256, 2])), tmp);
        Assert.Contains($"LoRA module '{missing}' has no weight '{missing}.weight' in {Paths.TinyModel} (tensor '{A(missing)}')", msg);
    }

    [Fact]
    public void Factors_for_another_architecture_name_the_key_and_the_models_shape()
    {
        using var tmp = Paths.Temp();
        var msg = Refused(WriteAdapter(tmp["adapter"], 2, (A(Q0), [2, 512]), (B(Q0), [256, 2])), tmp);
        Assert.Contains($"tensor '{A(Q0)}' is [2, 512] but the model's '{Q0}.weight' is [256, 256] (in features 256)", msg);

        using var tmp2 = Paths.Temp();
        var msgB = Refused(WriteAdapter(tmp2["adapter"], 2, (A(Q0), [2, 256]), (B(Q0), [4096, 2])), tmp2);
        Assert.Contains($"tensor '{B(Q0)}' is [4096, 2] but the model's '{Q0}.weight' is [256, 256] (out features 256)", msgB);
    }

    [Fact]
    public void A_rank_that_disagrees_with_adapter_config_is_refused()
    {
        using var tmp = Paths.Temp();
        var msg = Refused(WriteAdapter(tmp["adapter"], 4, (A(Q0), [8, 256]), (B(Q0), [256, 8])), tmp);
        Assert.Contains($"tensor '{A(Q0)}' [8, 256] has rank 8 but adapter_config.json says r=4", msg);
    }

    [Fact]
    public void A_module_with_only_one_factor_is_refused()
    {
        using var tmp = Paths.Temp();
        var msg = Refused(WriteAdapter(tmp["adapter"], 2, (A(Q0), [2, 256])), tmp);
        Assert.Contains($"LoRA module '{Q0}' has no tensor '{B(Q0)}'", msg);
    }

    [Fact]
    public void A_failure_mid_merge_leaves_no_output_and_no_temp_dir()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        int produced = 0;
        var options = new MergeOptions(MaxShardBytes: 8_000_000, OnTensor: name =>
        {
            produced++;
            if (name.StartsWith("model.layers.2.", StringComparison.Ordinal)) throw new IOException("No space left on device");
        });
        var e = Assert.Throws<IOException>(() => MergedCheckpoint.Write(Paths.TinyModel, adapter, tmp["out"], options));
        Assert.Equal("No space left on device", e.Message);
        Assert.True(produced > 10);  // it failed in the middle, after earlier shards were complete
        Assert.Equal(["adapter"], Directory.GetFileSystemEntries(tmp.Path).Select(p => Path.GetFileName(p)!));
    }

    [Fact]
    public void A_failure_while_overwriting_keeps_the_old_output()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        Directory.CreateDirectory(tmp["out"]);
        File.WriteAllText(Path.Combine(tmp["out"], "old.txt"), "previous model");
        var options = new MergeOptions(Overwrite: true, OnTensor: name => throw new IOException("disk full"));
        Assert.Throws<IOException>(() => MergedCheckpoint.Write(Paths.TinyModel, adapter, tmp["out"], options));
        Assert.Equal(["old.txt"], Directory.GetFileSystemEntries(tmp["out"]).Select(p => Path.GetFileName(p)!));
        Assert.Equal(2, Directory.GetFileSystemEntries(tmp.Path).Length);
    }

    [Fact]
    public void The_model_directory_itself_is_refused_as_output()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        var e = Assert.Throws<IOException>(() => MergedCheckpoint.Write(Paths.TinyModel, adapter, Paths.TinyModel + "/", new MergeOptions(Overwrite: true)));
        Assert.Contains("is the model directory being read", e.Message);
    }
}
