using System.Text.Json.Nodes;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Models.Tokenization;

namespace QLoraNet.Tests.Models;

/// <summary>Tokenizer files QLoraNet does not reproduce are refused by name; the pieces of the pipeline on their own.</summary>
[Trait("tier", "unit")]
public class TokenizerFileTests
{
    /// <summary>A copy of the llama3 fixture's tokenizer files with tokenizer.json edited by <paramref name="edit"/>.</summary>
    static TempDir Llama3With(Action<JsonObject> edit)
    {
        var dir = Paths.Temp();
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Paths.Family("llama3"), "tokenizer.json")))!.AsObject();
        edit(json);
        File.WriteAllText(dir["tokenizer.json"], json.ToJsonString());
        File.Copy(Path.Combine(Paths.Family("llama3"), "tokenizer_config.json"), dir["tokenizer_config.json"]);
        return dir;
    }

    static string Refusal(Action<JsonObject> edit)
    {
        using var dir = Llama3With(edit);
        var e = Assert.Throws<NotSupportedException>(() => TextTokenizers.Load(dir.Path));
        Assert.Contains(dir["tokenizer.json"], e.Message);
        Assert.DoesNotContain("\n", e.Message);
        return e.Message;
    }

    [Fact]
    public void Unigram_and_WordPiece_models_are_refused_by_name()
    {
        Assert.Contains("model type 'Unigram'", Refusal(j => j["model"] = new JsonObject { ["type"] = "Unigram", ["vocab"] = new JsonArray() }));
        Assert.Contains("model type 'WordPiece'", Refusal(j => j["model"] = new JsonObject { ["type"] = "WordPiece", ["vocab"] = new JsonObject() }));
        Assert.Contains("byte_fallback", Refusal(j => j["model"]!["byte_fallback"] = true));
    }

    [Fact]
    public void Unreproduced_pre_tokenizers_and_normalizers_are_refused_by_name()
    {
        Assert.Contains("pre_tokenizer 'Metaspace'", Refusal(j => j["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁" }));
        Assert.Contains("pre_tokenizer 'Digits' at step 2", Refusal(j => ((JsonArray)j["pre_tokenizer"]!["pretokenizers"]!).Insert(1, new JsonObject { ["type"] = "Digits" })));
        Assert.Contains("Split pre-tokenizer behavior 'Removed'", Refusal(j => j["pre_tokenizer"]!["pretokenizers"]![0]!["behavior"] = "Removed"));
        Assert.Contains("normalizer 'NFKC'", Refusal(j => j["normalizer"] = new JsonObject { ["type"] = "NFKC" }));
        Assert.Contains("normalizer 'Lowercase'", Refusal(j => j["normalizer"] = new JsonObject { ["type"] = "Sequence", ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "NFC" }, new JsonObject { ["type"] = "Lowercase" }) }));
        Assert.Contains("post_processor 'RobertaProcessing'", Refusal(j => j["post_processor"] = new JsonObject { ["type"] = "RobertaProcessing" }));
        Assert.Contains("decoder 'WordPiece'", Refusal(j => j["decoder"] = new JsonObject { ["type"] = "WordPiece" }));
    }

    [Theory]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b c\"]}}", "neither \"a b\" nor")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": [\"a\"]}}", "model.vocab must be an object")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}}}", "model.vocab['a'] must be an integer id in [0, 16777216)")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"added_tokens\": [{\"content\": \"<x>\"}]}", "needs an id and a content")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {}", "not valid JSON")]
    [InlineData("[1, 2]", "expected a JSON object")]
    public void Malformed_tokenizer_json_is_one_error_naming_the_file(string json, string expected)
    {
        using var dir = Paths.Temp();
        File.WriteAllText(dir["tokenizer.json"], json);
        var e = Assert.ThrowsAny<Exception>(() => TextTokenizers.Load(dir.Path));
        Assert.True(e is InvalidDataException or NotSupportedException, e.GetType().Name);
        Assert.Contains(dir["tokenizer.json"], e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Unknown_tokenizer_class_is_refused_by_name()
    {
        using var dir = Llama3With(_ => { });
        File.WriteAllText(dir["tokenizer_config.json"], """{"tokenizer_class": "T5Tokenizer", "eos_token": "<|eot_id|>"}""");
        var e = Assert.Throws<NotSupportedException>(() => TextTokenizers.Load(dir.Path));
        Assert.Contains("tokenizer_class 'T5Tokenizer'", e.Message);
        Assert.Contains("LlamaTokenizer", e.Message);
    }

    [Fact]
    public void A_unigram_sentencepiece_model_is_refused_by_name()
    {
        using var dir = Paths.Temp();
        // A second trainer_spec (field 2) with model_type (field 3) = UNIGRAM: protobuf merges it into the first.
        File.WriteAllBytes(dir["tokenizer.model"], [.. File.ReadAllBytes(Path.Combine(Paths.Family("gemma"), "tokenizer.model")), 0x12, 0x02, 0x18, 0x01]);
        File.Copy(Path.Combine(Paths.Family("gemma"), "tokenizer_config.json"), dir["tokenizer_config.json"]);
        var e = Assert.Throws<NotSupportedException>(() => TextTokenizers.Load(dir.Path));
        Assert.Contains("SentencePiece Unigram model is not supported", e.Message);
    }

    [Fact]
    public void Oversized_or_deeply_nested_json_is_one_error_naming_the_file()
    {
        using var dir = Paths.Temp();
        File.WriteAllText(dir["a.json"], new string('[', 200) + new string(']', 200));
        var deep = Assert.Throws<InvalidDataException>(() => BoundedJson.Read(dir["a.json"], 1 << 20, "test file"));
        Assert.Contains(dir["a.json"], deep.Message);
        var big = Assert.Throws<InvalidDataException>(() => BoundedJson.Read(dir["a.json"], 100, "test file"));
        Assert.Contains("400 bytes is more than a test file can be (100)", big.Message);
    }

    [Fact]
    public void Nfc_composes_orders_marks_and_keeps_exclusions()
    {
        var nfc = UnicodeNfc.Shared;
        Assert.Equal("é", nfc.Normalize("e\u0301"));
        Assert.Equal("Å", nfc.Normalize("\u212B"));                          // singleton decomposition (Angstrom sign)
        Assert.Equal("가", nfc.Normalize("\u1100\u1161"));                     // Hangul L + V
        Assert.Equal("각", nfc.Normalize("\u1100\u1161\u11A8"));               // Hangul LV + T
        Assert.Equal("\u1E0D\u0307", nfc.Normalize("\u1E0B\u0323"));        // decomposed, reordered, recomposed
        Assert.Equal("\u1E0D\u0307", nfc.Normalize("d\u0307\u0323"));        // marks reordered by class, then composed
        Assert.Equal("\u0915\u093C", nfc.Normalize("\u0958"));               // composition exclusion stays decomposed
        Assert.Same("plain ascii", nfc.Normalize("plain ascii"));
        Assert.Equal("Ké", nfc.Normalize("Ke\u0301", out var map));
        Assert.Equal(new[] { 0, 1 }, map);
    }

    [Fact]
    public void Added_tokens_honour_lstrip_rstrip_and_single_word()
    {
        var splitter = new AddedTokenSplitter([
            new AddedTokenSpec(1, "<mask>", Special: true, LStrip: true),
            new AddedTokenSpec(2, "<r>", Special: true, RStrip: true),
            new AddedTokenSpec(3, "word", Special: false, SingleWord: true),
            new AddedTokenSpec(4, "<m>", Special: true)]);
        string text = "a  <mask> b<r>  c word words <m><mask>";
        var pieces = splitter.Split(text, 0, text.Length).Select(p => (text.Substring(p.Start, p.Length), p.TokenId)).ToList();
        Assert.Equal(new (string, int?)[]
        {
            ("a", null), ("  <mask>", 1), (" b", null), ("<r>  ", 2), ("c ", null), ("word", 3), (" words ", null), ("<m>", 4), ("<mask>", 1),
        }, pieces);
    }

    [Fact]
    public void Regex_split_sees_letters_outside_the_bmp_as_letters()
    {
        var split = new RegexSplitter([@"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"], "test");
        string text = "a\U00020000b 𝟏𝟐𝟑𝟒 😀";                                // CJK Ext B letter; math digits (Nd); emoji (So)
        var pieces = split.Split(text).Select(p => text.Substring(p.Start, p.Length)).ToList();
        Assert.Equal(new[] { "a\U00020000b", " ", "𝟏𝟐𝟑", "𝟒", " 😀" }, pieces);
    }

    [Fact]
    public void Qwen2_keeps_non_special_added_tokens_when_decoding_and_drops_special_ones()
    {
        var tok = TextTokenizers.Load(Paths.Family("qwen2"));
        var ids = tok.Encode("<|im_start|>user\nHi<|im_end|>\n<tool_call>");
        Assert.Equal(1020, ids[0]);
        Assert.Equal(1022, ids[^1]);
        Assert.Equal("user\nHi\n<tool_call>", tok.Decode(ids));
        Assert.Null(tok.BosId);
        Assert.Equal(tok.TokenId("<|im_end|>"), tok.EosId);
    }
}
