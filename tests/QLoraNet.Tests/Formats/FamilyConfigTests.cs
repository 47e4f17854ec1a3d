using System.Text.Json.Nodes;
using QLoraNet.Formats;

namespace QLoraNet.Tests.Formats;

/// <summary>
/// Each family's parser on the fixtures' config.json (as transformers 5.17 writes them), on the hub's config.json
/// files of the real sizes (configs/models/), and on configs that contradict themselves or ask for what is not
/// implemented: refused by name, in one line naming the file, before any weight is read.
/// </summary>
[Trait("tier", "unit")]
public class FamilyConfigTests
{
    static string Fixture(string family) => Path.Combine(Paths.RepoRoot, "tests", "fixtures", "families", family);

    static string RealConfig(string name) => Path.Combine(Paths.RepoRoot, "configs", "models", name);

    /// <summary>The fixture's config.json with <paramref name="edit"/> applied, parsed from a temp directory.</summary>
    static ModelArchitecture Edited(string family, Action<JsonObject> edit)
    {
        using var tmp = Paths.Temp();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixture(family), "config.json")))!.AsObject();
        edit(config);
        File.WriteAllText(tmp["config.json"], config.ToJsonString());
        return ModelFamilies.Load(tmp.Path);
    }

    static string Refusal<TException>(string family, Action<JsonObject> edit) where TException : Exception
    {
        var e = Assert.Throws<TException>(() => Edited(family, edit));
        Assert.DoesNotContain("\n", e.Message);
        Assert.Contains("config.json", e.Message);
        return e.Message;
    }

    [Fact]
    public void Llama3_fixture_has_llama3_rope_from_rope_parameters_an_eos_list_gqa_and_a_tied_head()
    {
        var a = ModelFamilies.Load(Fixture("llama3"));
        Assert.Equal(("llama", 4, 2, 32, true), (a.Family, a.NumHeads, a.NumKvHeads, a.HeadDim, a.TiedHead));
        Assert.Equal(new RopeSettings(500000.0, 32, RopeScalingKind.Llama3, new Llama3RopeScaling(8, 1, 4, 64)), a.Rope);
        Assert.Equal([1014, 1021, 1022], a.Tokens.Eos);
        Assert.Equal(1013, a.Tokens.Bos);
        Assert.Null(a.AttentionWindows);
    }

    [Fact]
    public void Llama31_hub_config_has_llama3_rope_from_rope_scaling_with_the_top_level_theta()
    {
        var a = ModelFamilies.Load(RealConfig("llama3.1-8b-instruct"));
        Assert.Equal(new RopeSettings(500000.0, 128, RopeScalingKind.Llama3, new Llama3RopeScaling(8, 1, 4, 8192)), a.Rope);
        Assert.Equal([128001, 128008, 128009], a.Tokens.Eos);
        var l3 = ModelFamilies.Load(RealConfig("llama3-8b"));   // Llama 3 (not 3.1): rope_scaling null
        Assert.Equal(new RopeSettings(500000.0, 128), l3.Rope);
    }

    [Fact]
    public void Mistral_fixture_windows_every_layer_and_a_null_window_means_full_attention()
    {
        var a = ModelFamilies.Load(Fixture("mistral"));
        Assert.Equal([16, 16, 16, 16], a.AttentionWindows!);
        Assert.False(a.TiedHead);
        Assert.Null(Edited("mistral", c => c["sliding_window"] = null).AttentionWindows);                  // v0.2 and later
        Assert.Equal(MistralFamily.DefaultWindow, Edited("mistral", c => c.Remove("sliding_window")).AttentionWindow(3)); // MistralConfig's default
        Assert.Equal([16, null, 16, null], Edited("mistral", c => c["layer_types"] = new JsonArray("sliding_attention", "full_attention", "sliding_attention", "full_attention")).AttentionWindows!);
    }

    [Fact]
    public void Qwen2_fixture_has_biases_on_q_k_v_only_a_tied_head_theta_1e6_and_no_window()
    {
        var a = ModelFamilies.Load(Fixture("qwen2"));
        Assert.Equal([true, true, true, false, false, false, false], a.LayerLinears.Select(l => l.HasBias));
        Assert.Equal((true, 1e6, 32), (a.TiedHead, a.Rope.Theta, a.HeadDim));
        Assert.Null(a.AttentionWindows);
        Assert.Contains(a.ExpectedTensors(), e => e.Name == "model.layers.3.self_attn.v_proj.bias" && e.Shape.SequenceEqual(new long[] { 64 }));
        Assert.DoesNotContain(a.ExpectedTensors(), e => e.Name.EndsWith("o_proj.bias"));
    }

    [Fact]
    public void Qwen2_without_bos_token_id_has_no_bos_rather_than_a_borrowed_eos()
    {
        // Qwen2Config has no bos default: the id would be a guess, and the tokenizer (which adds none) decides anyway.
        Assert.Null(Edited("qwen2", c => c.Remove("bos_token_id")).Tokens.Bos);
        Assert.Equal(1019, ModelFamilies.Load(Fixture("qwen2")).Tokens.Bos);   // as config.json names it: <|endoftext|>
    }

    [Fact]
    public void Qwen2_use_sliding_window_is_honoured_and_a_contradicting_layer_type_refused()
    {
        // Qwen2.5 ships sliding_window 131072 with use_sliding_window false: no window anywhere.
        Assert.Null(ModelFamilies.Load(RealConfig("qwen2.5-7b")).AttentionWindows);
        var on = Edited("qwen2", c => { c.Remove("layer_types"); c["use_sliding_window"] = true; c["sliding_window"] = 8; c["max_window_layers"] = 2; });
        Assert.Equal([null, null, 8, 8], on.AttentionWindows!);
        var e = Refusal<InvalidDataException>("qwen2", c => c["layer_types"] = new JsonArray("full_attention", "sliding_attention", "full_attention", "full_attention"));
        Assert.Contains("layer_types[1] is sliding_attention but use_sliding_window is false", e);
    }

    [Fact]
    public void Gemma_fixture_has_offset_norms_geglu_scaled_embeddings_and_an_independent_head_dim()
    {
        var a = ModelFamilies.Load(Fixture("gemma"));
        Assert.Equal((NormKind.RmsOffsetOne, Activation.GeluTanh, true, true), (a.Norm, a.Activation, a.ScaleEmbeddings, a.TiedHead));
        Assert.Equal((128, 4, 1, 48), (a.Hidden, a.NumHeads, a.NumKvHeads, a.HeadDim));
        Assert.Equal("self_attn.q_proj 192x128, self_attn.o_proj 128x192",
            string.Join(", ", a.LayerLinears.Where(l => l.Name is "q_proj" or "o_proj").Select(l => $"{l.Path} {l.OutFeatures}x{l.InFeatures}")));
        Assert.Equal(((int?)2, 1, (int?)0), (a.Tokens.Bos, a.Tokens.Eos.Single(), a.Tokens.Pad));
        Assert.Equal(Math.Pow(48, -0.5), a.QueryScale);
        Assert.False(a.HasCustomAttentionScores);
    }

    [Fact]
    public void Gemma_activation_hidden_activation_wins_and_exact_gelu_is_refused()
    {
        Assert.Equal(Activation.GeluTanh, Edited("gemma", c => { c["hidden_act"] = "gelu"; c["hidden_activation"] = "gelu_pytorch_tanh"; }).Activation);
        Assert.Equal(Activation.GeluTanh, Edited("gemma", c => c.Remove("hidden_act")).Activation);   // GemmaConfig's default
        Assert.Contains("hidden_act 'gelu' is not supported for Gemma", Refusal<NotSupportedException>("gemma", c => c["hidden_act"] = "gelu"));
        Assert.Equal(GemmaFamily.DefaultHeadDim, Edited("gemma", c => c.Remove("head_dim")).HeadDim);
    }

    [Fact]
    public void Gemma2_fixture_has_four_norms_caps_query_scalar_and_alternating_windows()
    {
        var a = ModelFamilies.Load(Fixture("gemma2"));
        Assert.Equal(["input_layernorm PreAttention", "post_attention_layernorm PostAttention", "pre_feedforward_layernorm PreMlp", "post_feedforward_layernorm PostMlp"],
            a.LayerNorms.Select(n => $"{n.Path} {n.Role}"));
        Assert.Equal((5.0, 5.0, 64.0), (a.AttentionSoftCap, a.FinalLogitSoftCap, a.QueryPreAttentionScalar));
        Assert.Equal(0.125, a.QueryScale);
        Assert.True(a.HasCustomAttentionScores);
        Assert.Equal([16, null, 16, null], a.AttentionWindows!);
        // Without layer_types (the hub's Gemma 2 files): every even layer slides, as Gemma2Config fills it in.
        Assert.Equal([16, null, 16, null], Edited("gemma2", c => c.Remove("layer_types")).AttentionWindows!);
        var uncapped = Edited("gemma2", c => { c["attn_logit_softcapping"] = null; c["final_logit_softcapping"] = null; });
        Assert.Equal((null, null), (uncapped.AttentionSoftCap, uncapped.FinalLogitSoftCap));
    }

    public static TheoryData<string> Families => new(["llama3", "mistral", "qwen2", "gemma", "gemma2"]);

    [Theory]
    [MemberData(nameof(Families))]
    public void Unimplemented_rope_types_and_expert_mixtures_are_refused_by_name(string family)
    {
        Assert.Contains("rope_parameters type 'yarn' is not implemented",
            Refusal<NotSupportedException>(family, c => c["rope_parameters"] = new JsonObject { ["rope_type"] = "yarn", ["factor"] = 4.0, ["rope_theta"] = 1e4 }));
        Assert.Contains("rope_scaling type 'dynamic'",
            Refusal<NotSupportedException>(family, c => c["rope_scaling"] = new JsonObject { ["type"] = "dynamic", ["factor"] = 2.0 }));
        Assert.Contains("num_experts 8: mixture-of-experts", Refusal<NotSupportedException>(family, c => c["num_experts"] = 8));
        Assert.Contains("partial rotary", ArchitectureRefusal(Edited(family, c => c["partial_rotary_factor"] = 0.5)));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Kv_heads_that_do_not_divide_the_heads_are_a_one_line_error(string family) =>
        Assert.Contains("num_attention_heads 4 is not a multiple of num_key_value_heads 3",
            Refusal<InvalidDataException>(family, c => c["num_key_value_heads"] = 3));

    [Theory]
    [InlineData("llama3")]
    [InlineData("mistral")]
    [InlineData("qwen2")]
    public void A_derived_head_dim_needs_hidden_divisible_by_heads(string family) =>
        // Gemma's head_dim is independent (absent = 256), so only the families that derive it check this.
        Assert.Contains("hidden_size 130 is not a multiple of num_attention_heads 4 and no head_dim is given",
            Refusal<InvalidDataException>(family, c => { c["hidden_size"] = 130; c.Remove("head_dim"); }));

    [Theory]
    [InlineData("mistral")]
    [InlineData("qwen2")]
    [InlineData("gemma2")]
    public void Layer_types_must_cover_every_layer_with_a_known_type(string family)
    {
        // The families whose config classes have sliding windows (Llama and Gemma have no layer_types: ignored, as transformers does).
        Assert.Contains("layer_types has 2 entries but num_hidden_layers is",
            Refusal<InvalidDataException>(family, c => c["layer_types"] = new JsonArray("full_attention", "full_attention")));
        Assert.Contains("layer_types[0] 'chunked_attention' is not implemented",
            Refusal<NotSupportedException>(family, c => c["layer_types"] = new JsonArray(Enumerable.Repeat("chunked_attention", (int)c["num_hidden_layers"]!).Select(x => (JsonNode?)x).ToArray())));
    }

    [Fact]
    public void Family_specific_contradictions_and_switches_are_refused()
    {
        Assert.Contains("head_dim 48 x num_attention_heads 4 = 192, but this family's attention requires hidden_size 128",
            Refusal<InvalidDataException>("qwen2", c => c["head_dim"] = 48));
        Assert.Contains("use_mrope true", Refusal<NotSupportedException>("qwen2", c => c["use_mrope"] = true));
        Assert.Contains("use_bidirectional_attention true", Refusal<NotSupportedException>("gemma", c => c["use_bidirectional_attention"] = true));
        Assert.Contains("use_bidirectional_attention true", Refusal<NotSupportedException>("gemma2", c => c["use_bidirectional_attention"] = true));
        Assert.Contains("high_freq_factor 1 must exceed low_freq_factor 1",
            Refusal<InvalidDataException>("llama3", c => c["rope_parameters"]!["high_freq_factor"] = 1.0));
        Assert.Contains("rope_parameters of rope_type llama3 needs 'original_max_position_embeddings'",
            Refusal<InvalidDataException>("llama3", c => c["rope_parameters"]!.AsObject().Remove("original_max_position_embeddings")));
        Assert.Contains("sliding_window 0 must be at least 1", Refusal<InvalidDataException>("mistral", c => c["sliding_window"] = 0));
        Assert.Contains("attn_logit_softcapping -1 must be positive", Refusal<InvalidDataException>("gemma2", c => c["attn_logit_softcapping"] = -1.0));
        Assert.Contains("hidden_act 'gelu_pytorch_tanh' is not supported (Mistral uses silu)",
            Refusal<NotSupportedException>("mistral", c => c["hidden_act"] = "gelu_pytorch_tanh"));
    }

    /// <summary>
    /// The hub's config.json of one real size per family, counted from config.json alone against the published
    /// sizes: Llama-3-8B 8.03B, Llama-3.2-1B 1.24B (tied), Mistral-7B 7.24B, Qwen2.5-7B 7.62B (q/k/v biases),
    /// Gemma-7B 8.54B (head_dim 256 x 16 heads = 4096 against hidden 3072, tied), Gemma-2-9B 9.24B (4 norms a layer).
    /// </summary>
    [Theory]
    [InlineData("llama3-8b", "llama", 8_030_261_248L)]
    [InlineData("llama3.1-8b-instruct", "llama", 8_030_261_248L)]
    [InlineData("llama3.2-1b", "llama", 1_235_814_400L)]
    [InlineData("mistral-7b", "mistral", 7_241_732_096L)]
    [InlineData("qwen2.5-7b", "qwen2", 7_615_616_512L)]
    [InlineData("gemma-7b", "gemma", 8_537_680_896L)]
    [InlineData("gemma2-9b", "gemma2", 9_241_705_984L)]
    public void Real_size_configs_count_the_published_parameters(string name, string family, long parameters)
    {
        var a = ModelFamilies.Load(RealConfig(name));
        Assert.Equal(family, a.Family);
        Assert.Equal(parameters, a.ParameterCount);
        QLoraNet.Models.ArchitectureSupport.Require(a, name);   // and the model code computes every feature
    }

    static string ArchitectureRefusal(ModelArchitecture a) =>
        Assert.Throws<NotSupportedException>(() => QLoraNet.Models.ArchitectureSupport.Require(a, "config.json")).Message;
}
