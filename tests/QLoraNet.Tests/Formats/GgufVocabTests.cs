using QLoraNet.Formats;

namespace QLoraNet.Tests.Formats;

/// <summary>tokenizer.model parsing and the GGUF vocabulary built from it.</summary>
[Trait("tier", "unit")]
public class GgufVocabTests
{
    [Fact]
    public void Parses_the_Llama2_sentencepiece_model()
    {
        var spm = SentencePieceModel.Load(Paths.TinyModel);
        Assert.Equal(32000, spm.Pieces.Count);
        Assert.Equal(("<unk>", SentencePieceModel.PieceType.Unknown), (spm.Pieces[0].Text, spm.Pieces[0].Type));
        Assert.Equal(("<s>", SentencePieceModel.PieceType.Control), (spm.Pieces[1].Text, spm.Pieces[1].Type));
        Assert.Equal(("</s>", SentencePieceModel.PieceType.Control), (spm.Pieces[2].Text, spm.Pieces[2].Type));
        Assert.Equal(("<0x00>", SentencePieceModel.PieceType.Byte), (spm.Pieces[3].Text, spm.Pieces[3].Type));
        Assert.Equal(("<0xFF>", SentencePieceModel.PieceType.Byte), (spm.Pieces[258].Text, spm.Pieces[258].Type));
        Assert.Equal(256, spm.Pieces.Count(p => p.Type == SentencePieceModel.PieceType.Byte));
        Assert.Equal("▁the", spm.Pieces[278].Text);          // "the" in the reference ids of "the state of the Union"
        Assert.Equal("▁The▁whale", string.Concat(new[] { 450, 377, 744 }.Select(i => spm.Pieces[i].Text)));   // reference.json ids
        Assert.True(spm.Pieces[278].Score > spm.Pieces[31999].Score);   // BPE merge order: earlier pieces score higher
        Assert.Equal((0, 1, 2, -1), (spm.UnkId, spm.BosId, spm.EosId, spm.PadId));
    }

    [Fact]
    public void Vocab_types_and_special_ids_follow_the_converter()
    {
        var v = GgufLlamaVocab.Load(Paths.TinyModel, 32000);
        Assert.Equal(32000, v.Tokens.Count);
        Assert.Equal(new[] { 2, 3, 3, 6 }, v.TokenTypes.Take(4));
        Assert.Equal(256, v.TokenTypes.Count(t => t == GgufLlamaVocab.Byte));
        Assert.Equal(32000 - 259, v.TokenTypes.Count(t => t == GgufLlamaVocab.Normal));
        Assert.Equal((1, 2, 0), (v.BosId, v.EosId, v.UnkId));
        Assert.Null(v.PadId);                                // "pad_token_id": null in config.json
        Assert.Equal((true, false), (v.AddBos, v.AddEos));   // tokenizer_config.json
    }

    [Fact]
    public void A_larger_config_vocab_is_padded_with_unused_tokens()
    {
        var v = GgufLlamaVocab.Load(Paths.TinyModel, 32002);
        Assert.Equal("[PAD32001]", v.Tokens[32001]);
        Assert.Equal(GgufLlamaVocab.Unused, v.TokenTypes[32000]);
        Assert.Equal(-10000f, v.Scores[32000]);
    }

    [Fact]
    public void User_defined_pieces_become_normal_and_unknown_fields_are_skipped()
    {
        // ModelProto { pieces: {piece "a", score 0.5, type USER_DEFINED}, pieces: {piece "<u>", type UNUSED},
        //              field 7 (varint 300, unknown), trainer_spec { unk_id 1, bos_id 0 } }
        byte[] Piece(string text, float score, int type) =>
            new byte[] { 0x0A, (byte)text.Length }.Concat(text.Select(c => (byte)c))
                .Concat(new byte[] { 0x15 }).Concat(BitConverter.GetBytes(score))
                .Concat(new byte[] { 0x18, (byte)type }).ToArray();
        var p1 = Piece("a", 0.5f, 4);
        var p2 = Piece("<u>", 0f, 5);
        var trainer = new byte[] { 0xC0, 0x02, 0x01, 0xC8, 0x02, 0x00 };   // field 40 = 1, field 41 = 0 (tags 320, 328)
        var bytes = new byte[] { 0x0A, (byte)p1.Length }.Concat(p1)
            .Concat(new byte[] { 0x0A, (byte)p2.Length }).Concat(p2)
            .Concat(new byte[] { 0x38, 0xAC, 0x02 })
            .Concat(new byte[] { 0x12, (byte)trainer.Length }).Concat(trainer).ToArray();
        var spm = SentencePieceModel.Parse(bytes);
        Assert.Equal(new[] { "a", "<u>" }, spm.Pieces.Select(p => p.Text));
        Assert.Equal(0.5f, spm.Pieces[0].Score);
        Assert.Equal(SentencePieceModel.PieceType.UserDefined, spm.Pieces[0].Type);
        Assert.Equal((1, 0, 2), (spm.UnkId, spm.BosId, spm.EosId));
        var e = Assert.Throws<InvalidDataException>(() => SentencePieceModel.Parse(bytes[..^3]));
        Assert.Contains("past the end", e.Message);
    }
}
