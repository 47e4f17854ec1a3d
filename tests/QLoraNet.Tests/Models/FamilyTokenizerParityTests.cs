using System.Text.Json;
using QLoraNet.Models;

namespace QLoraNet.Tests.Models;

/// <summary>
/// Each family fixture's tokenizer against transformers 5.17's ids (reference.json probes: ~40 tricky strings, with
/// the default special tokens and with add_special_tokens=False) and decoded text.
/// </summary>
[Trait("tier", "parity")]
public class FamilyTokenizerParityTests
{
    public static TheoryData<string> Families => new() { "llama3", "mistral", "qwen2", "gemma", "gemma2", "bitnet" };

    internal static JsonElement Reference(string family) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(Paths.Family(family), "reference.json"))).RootElement;

    internal static int[] Ids(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();

    [Theory, MemberData(nameof(Families))]
    public void Probe_ids_equal_transformers_with_and_without_special_tokens(string family)
    {
        var tok = TextTokenizers.Load(Paths.Family(family));
        var failures = new List<string>();
        foreach (var p in Reference(family).GetProperty("probes").EnumerateArray())
        {
            string text = p.GetProperty("text").GetString()!;
            var want = Ids(p.GetProperty("ids"));
            var wantPlain = Ids(p.GetProperty("ids_no_special"));
            var got = tok.Encode(text).ToArray();
            var gotPlain = tok.Tokenize(text, addSpecialTokens: false).Ids.ToArray();
            if (!want.SequenceEqual(got)) failures.Add($"{JsonSerializer.Serialize(text)} default: want [{string.Join(",", want)}] got [{string.Join(",", got)}]");
            if (!wantPlain.SequenceEqual(gotPlain)) failures.Add($"{JsonSerializer.Serialize(text)} no special: want [{string.Join(",", wantPlain)}] got [{string.Join(",", gotPlain)}]");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Theory, MemberData(nameof(Families))]
    public void Decoding_the_probe_ids_gives_transformers_text(string family)
    {
        var tok = TextTokenizers.Load(Paths.Family(family));
        var failures = new List<string>();
        foreach (var p in Reference(family).GetProperty("probes").EnumerateArray())
        {
            var ids = Ids(p.GetProperty("ids_no_special"));
            if (ids.Any(tok.IsSpecial)) continue;                 // the reference keeps special tokens; Decode drops them
            string want = p.GetProperty("decoded").GetString()!, got = tok.Decode(ids);
            if (want != got) failures.Add($"{JsonSerializer.Serialize(p.GetProperty("text").GetString())}: want {JsonSerializer.Serialize(want)} got {JsonSerializer.Serialize(got)}");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Theory, InlineData("llama3"), InlineData("qwen2")]
    public void Byte_level_decoding_gives_back_the_text(string family)
    {
        var tok = TextTokenizers.Load(Paths.Family(family));
        foreach (var p in Reference(family).GetProperty("probes").EnumerateArray())
        {
            string text = p.GetProperty("text").GetString()!;
            var ids = tok.Tokenize(text, addSpecialTokens: false).Ids;
            if (ids.Any(tok.IsSpecial)) continue;
            string want = family == "qwen2" ? QLoraNet.Models.Tokenization.UnicodeNfc.Shared.Normalize(text) : text;
            Assert.Equal(want, tok.Decode(ids));
        }
    }

    [Fact]
    public void Token_starts_point_at_each_tokens_first_character()
    {
        var tok = TextTokenizers.Load(Paths.Family("qwen2"));
        string text = "e\u0301 caf\u00e9<|im_end|>\n日本";
        var t = tok.Tokenize(text, addSpecialTokens: false);
        Assert.Equal(t.Ids.Count, t.Starts.Count);
        Assert.Equal(0, t.Starts[0]);
        Assert.Equal(text.IndexOf("<|im_end|>", StringComparison.Ordinal), t.Starts[t.Ids.ToList().IndexOf(1021)]);
        Assert.True(t.Starts.Zip(t.Starts.Skip(1)).All(p => p.First <= p.Second));
        var sp = TextTokenizers.Load(Paths.Family("mistral")).Tokenize(" [/INST] Ridge", addSpecialTokens: false);
        Assert.Contains(8, sp.Starts);                                          // "▁R..." starts at the space before Ridge
    }
}
