using System.Text;
using QLoraNet.Formats;
using QLoraNet.Models.Tokenization;

namespace QLoraNet.Models;

/// <summary>
/// A SentencePiece tokenizer.model (Llama 2, Mistral, Gemma) tokenized as transformers 5.17 does, which does not run
/// SentencePiece: it rebuilds a tokenizers BPE from the model (<see cref="SentencePieceBpe"/>) and builds the rest of
/// the pipeline in code, by tokenizer class (tokenizer_config.json's <c>tokenizer_class</c>):
/// <list type="bullet">
/// <item>LlamaTokenizer (Llama 2, Mistral): spaces become "▁" and a "▁" is prepended to a piece of text that does
/// not already start with one (Metaspace, split off). With <c>legacy: true</c> (prepend scheme "always") every piece
/// between added tokens gets it, otherwise ("first") only a piece at the start of the text; <c>add_prefix_space:
/// false</c> turns it off. Decoding drops one leading space.</item>
/// <item>GemmaTokenizer: spaces become "▁", nothing is prepended, nothing stripped when decoding.</item>
/// </list>
/// Added tokens (tokenizer_config's added_tokens_decoder, the special tokens it names, and the model's user-defined
/// pieces) are matched in the text first, so "&lt;/s&gt;" written in a text is the EOS id, as in transformers.
/// Where this differs from running SentencePiece itself: SentencePiece always adds its dummy-prefix "▁", also to a
/// text that starts with a space (" Hello" is "▁▁Hello" there, "▁Hello" here), and spells special-token strings out.
/// The default BOS/EOS rule comes from add_bos_token/add_eos_token (defaults true/false). Without a pad token,
/// padding uses the unknown piece (Llama 2 has no pad token).
/// </summary>
public sealed class SentencePieceTextTokenizer : ITextTokenizer
{
    /// <summary>How a "▁" is put before a piece of text (tokenizers' Metaspace prepend_scheme).</summary>
    public enum PrependScheme { Always, First, Never }

    readonly SentencePieceBpe bpe;
    readonly SentencePieceModel model;
    readonly Dictionary<int, AddedTokenSpec> addedById = [];
    readonly AddedTokenSplitter added;
    readonly bool addBos, addEos, stripLeadingSpace;

    SentencePieceTextTokenizer(SentencePieceModel model, TokenizerConfigJson config, string path)
    {
        this.model = model;
        bpe = new SentencePieceBpe(model);
        string cls = config.TokenizerClassBase ?? "LlamaTokenizer";
        Scheme = cls switch
        {
            "GemmaTokenizer" => PrependScheme.Never,
            "LlamaTokenizer" when config.AddPrefixSpace == false => PrependScheme.Never,
            "LlamaTokenizer" => config.Legacy == true ? PrependScheme.Always : PrependScheme.First,
            _ => throw new NotSupportedException($"{path}: tokenizer_class {SafeText.Quote(config.TokenizerClass, 60)} with a SentencePiece tokenizer.model is not supported (implemented: LlamaTokenizer, GemmaTokenizer); QLoraNet refuses rather than tokenize differently from transformers"),
        };
        stripLeadingSpace = cls == "LlamaTokenizer" && config.AddPrefixSpace != false;
        if (model.Kind != SentencePieceModel.ModelKind.Bpe)
            throw new NotSupportedException($"{path}: a SentencePiece {model.Kind} model is not supported (only BPE models, as Llama, Mistral and Gemma ship)");

        foreach (var t in config.AddedTokens) addedById.TryAdd(t.Id, t);
        var named = config.NamedSpecialTokens.ToList();
        if (ReferenceEquals(config, TokenizerConfigJson.Empty))
            named.AddRange(new[] { model.UnkId, model.BosId, model.EosId, model.PadId }.Where(i => i >= 0 && i < model.Pieces.Count).Select(i => model.Pieces[i].Text));
        foreach (string s in named)
            if (bpe.IdOf(s) is int id) addedById.TryAdd(id, new AddedTokenSpec(id, s, Special: true));
        for (int id = 0; id < model.Pieces.Count; id++)
            if (model.Pieces[id].Type == SentencePieceModel.PieceType.UserDefined)
                addedById.TryAdd(id, new AddedTokenSpec(id, model.Pieces[id].Text, Special: false));
        added = new AddedTokenSplitter(addedById.Values);

        BosId = config.BosToken is { } b ? bpe.IdOf(b) ?? Missing("bos_token", b) : model.BosId >= 0 ? model.BosId : null;
        EosId = config.EosToken is { } e ? bpe.IdOf(e) ?? Missing("eos_token", e) : model.EosId;
        PadId = config.PadToken is { } p && bpe.IdOf(p) is int pad ? pad : model.PadId >= 0 ? model.PadId : model.UnkId;
        addBos = config.AddBosToken ?? true;
        addEos = config.AddEosToken ?? false;
        VocabSize = Math.Max(model.Pieces.Count, addedById.Count == 0 ? 0 : addedById.Keys.Max() + 1);

        int Missing(string key, string token) =>
            throw new InvalidDataException($"{path}: tokenizer_config.json's {key} {SafeText.Quote(token, 60)} is not a piece of the SentencePiece model");
    }

    /// <summary>Loads tokenizer.model (and tokenizer_config.json) from a model directory.</summary>
    public static SentencePieceTextTokenizer Load(string modelDir) => Load(modelDir, TokenizerConfigJson.Load(modelDir));

    public static SentencePieceTextTokenizer Load(string modelDir, TokenizerConfigJson config)
    {
        string path = SentencePieceModel.Find(modelDir) ?? throw new FileNotFoundException(
            $"{Path.Combine(modelDir, SentencePieceModel.FileName)} not found: the model directory needs its tokenizer (tokenizer.model or tokenizer.json)",
            Path.Combine(modelDir, SentencePieceModel.FileName));
        return new SentencePieceTextTokenizer(SentencePieceModel.Load(path), config, path);
    }

    public PrependScheme Scheme { get; }
    public int? BosId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public int VocabSize { get; }

    /// <summary>The parsed tokenizer.model, for the GGUF vocabulary.</summary>
    public SentencePieceModel Model => model;

    public IReadOnlyList<int> Encode(string text) => ((ITextTokenizer)this).Encode(text, addBos, addEos);

    public TokenizedText Tokenize(string text, bool addSpecialTokens)
    {
        var ids = new List<int>();
        var starts = new List<int>();
        if (addSpecialTokens && addBos && BosId is int bos) { ids.Add(bos); starts.Add(0); }
        foreach (var piece in added.Split(text, 0, text.Length))
        {
            if (piece.TokenId is int id) { ids.Add(id); starts.Add(piece.Start); continue; }
            var spelled = new StringBuilder(piece.Length + 1);
            spelled.Append(text, piece.Start, piece.Length).Replace(' ', '▁');
            int shift = 0;
            if (spelled[0] != '▁' && (Scheme == PrependScheme.Always || Scheme == PrependScheme.First && piece.Start == 0))
            {
                spelled.Insert(0, '▁');
                shift = 1;
            }
            int before = ids.Count;
            bpe.Encode(spelled.ToString(), ids, starts);
            for (int k = before; k < starts.Count; k++) starts[k] = piece.Start + Math.Max(0, starts[k] - shift);
        }
        if (addSpecialTokens && addEos) { ids.Add(EosId); starts.Add(text.Length); }
        return new TokenizedText(ids, starts);
    }

    /// <summary>tokenizers' decoder chain: "▁" to space, byte pieces to bytes (invalid UTF-8 to U+FFFD), one leading space dropped (Llama).</summary>
    public string Decode(IEnumerable<int> ids)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (addedById.TryGetValue(id, out var a) && a.Special) continue;
            if (id < 0 || id >= model.Pieces.Count) continue;
            var piece = model.Pieces[id];
            if (piece.Type == SentencePieceModel.PieceType.Byte && piece.Text.Length == 6)
            {
                bytes.Add(Convert.ToByte(piece.Text.Substring(3, 2), 16));
                continue;
            }
            Flush();
            sb.Append(piece.Text.Replace('▁', ' '));
        }
        Flush();
        string text = sb.ToString();
        return stripLeadingSpace && text.StartsWith(' ') ? text[1..] : text;

        void Flush()
        {
            if (bytes.Count == 0) return;
            sb.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
        }
    }

    public string PieceText(int id)
    {
        if (id < 0 || id >= model.Pieces.Count) return addedById.TryGetValue(id, out var a) ? a.Content : $"<id {id}>";
        var piece = model.Pieces[id];
        if (addedById.ContainsKey(id) || piece.Type != SentencePieceModel.PieceType.Normal) return piece.Text;
        return piece.Text.Replace('▁', ' ');
    }

    public int? TokenId(string token) => bpe.IdOf(token) ?? addedById.Values.FirstOrDefault(t => t.Content == token)?.Id;

    public bool IsSpecial(int id) => addedById.TryGetValue(id, out var t) && t.Special;
}
