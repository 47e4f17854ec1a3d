using QLoraNet.Models;

namespace QLoraNet.Tests.Models;

[Trait("tier", "unit")]
public class TextTokenizerTests
{
    [Fact]
    public void Encodes_like_sentencepiece_with_bos_and_decodes_back()
    {
        var tok = TextTokenizers.Load(Paths.TinyModel);
        Assert.IsType<SentencePieceTextTokenizer>(tok);
        Assert.Equal(new[] { 1, 15043, 3186, 29991 }, tok.Encode("Hello world!"));
        Assert.Equal((1, 2), (tok.BosId, tok.EosId));
        Assert.Equal("Hello world!", tok.Decode(tok.Encode("Hello world!")));
        Assert.Equal(new[] { 15043, 3186, 29991 }, tok.Encode("Hello world!", addBos: false, addEos: false));
    }

    [Fact]
    public void Tokenizer_config_flags_decide_bos_and_eos()
    {
        using var dir = Paths.Temp();
        File.Copy(Path.Combine(Paths.TinyModel, "tokenizer.model"), dir["tokenizer.model"]);
        File.WriteAllText(dir["tokenizer_config.json"], """{"add_bos_token": false, "add_eos_token": true}""");
        Assert.Equal(new[] { 15043, 3186, 29991, 2 }, TextTokenizers.Load(dir.Path).Encode("Hello world!"));
        File.Delete(dir["tokenizer_config.json"]);                                   // absent: HF defaults, BOS only
        Assert.Equal(new[] { 1, 15043, 3186, 29991 }, TextTokenizers.Load(dir.Path).Encode("Hello world!"));
    }

    [Fact]
    public void Missing_tokenizer_model_names_the_file()
    {
        using var dir = Paths.Temp();
        var e = Assert.Throws<FileNotFoundException>(() => TextTokenizers.Load(dir.Path));
        Assert.Contains(dir["tokenizer.model"], e.Message);
    }

    [Fact]
    public void A_corrupt_tokenizer_model_is_one_error_naming_the_file()
    {
        using var dir = Paths.Temp();
        File.WriteAllBytes(dir["tokenizer.model"], [0x0A, 0xFF]);
        var e = Assert.Throws<InvalidDataException>(() => TextTokenizers.Load(dir.Path));
        Assert.Contains(dir["tokenizer.model"], e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}
