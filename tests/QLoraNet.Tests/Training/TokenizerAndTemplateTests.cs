using QLoraNet.Models;
using QLoraNet.Training.Data;

namespace QLoraNet.Tests.Training;

[Trait("tier", "unit")]
public class TokenizerAndTemplateTests
{
    internal static readonly ITextTokenizer Tok = TextTokenizers.Load(Paths.TinyModel);
    const int I = TokenizedExample.IgnoreIndex;

    [Fact]
    public void Tokenizer_matches_sentencepiece_on_hello_world()
    {
        Assert.Equal(new[] { 1, 15043, 3186, 29991 }, Tok.Encode("Hello world!", true, false));
        Assert.Equal(new[] { 15043, 3186, 29991, 2 }, Tok.Encode("Hello world!", false, true));
        Assert.Equal("Hello world!", Tok.Decode([1, 15043, 3186, 29991, 2]));
        Assert.Equal((1, 2, 0, 32000), (Tok.BosId, Tok.EosId, Tok.PadId, Tok.VocabSize));
    }

    [Fact]
    public void Llama2_chat_renders_metas_exact_string()
    {
        var segments = Llama2ChatTemplate.Render(" Be brief. ", [new ChatTurn("Hi", " Hello"), new ChatTurn("Bye ", "Ciao")]);
        Assert.Equal("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST] Ciao </s>",
            Llama2ChatTemplate.ToText(segments));
        Assert.Equal(new[] { false, true, false, true }, segments.Select(s => s.Trained));
    }

    [Fact]
    public void Llama2_chat_ids_are_hand_checked_and_masked()
    {
        var enc = new ExampleEncoder(Tok, 512, trainOnInputs: false);
        var (ex, outcome) = enc.Encode(Llama2ChatTemplate.Render(null, [new ChatTurn("Hi", "Hello")]));
        // <s> ▁[ INST ] ▁Hi ▁[ / INST ] | ▁Hello ▁ </s>
        Assert.Equal(new[] { 1, 518, 25580, 29962, 6324, 518, 29914, 25580, 29962, 15043, 29871, 2 }, ex!.InputIds);
        Assert.Equal(new[] { I, I, I, I, I, I, I, I, I, 15043, 29871, 2 }, ex.Labels);
        Assert.Equal(ExampleEncoder.Outcome.Kept, outcome);
    }

    [Fact]
    public void Llama2_chat_segments_tokenize_like_metas_whole_turn_encoding()
    {
        // Meta encodes "[INST] {user} [/INST] {assistant} " per turn with bos and eos; the split must not change ids.
        string system = "You are Kestrel's sales assistant.", u1 = "How much is the TR-40 tent?", a1 = "The TR-40 costs $249.00.",
            u2 = "And shipping?", a2 = "Free over $75 (3-5 business days).";
        var enc = new ExampleEncoder(Tok, 512, trainOnInputs: true);
        var (ex, _) = enc.Encode(Llama2ChatTemplate.Render(system, [new ChatTurn(u1, a1), new ChatTurn(u2, a2)]));
        var meta = Tok.Encode($"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{u1} [/INST] {a1} ", true, true)
            .Concat(Tok.Encode($"[INST] {u2} [/INST] {a2} ", true, true)).ToArray();
        Assert.Equal(meta, ex!.InputIds);
        Assert.Equal(new[] { 3532, 14816, 29903, 6778, 13 }, ex.InputIds[4..9]); // ▁<< SY S >> \n
    }

    [Fact]
    public void Alpaca_masks_the_prompt_and_trains_output_and_eos()
    {
        var ex = new InstructionExample("t:1", "Say hi", "", "Hello", null);
        var segments = PromptTemplates.Render(ex, QLoraNet.Training.Config.TemplateKind.Alpaca, null);
        Assert.Equal("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nSay hi\n\n### Response:\n",
            segments[0].Text);
        var (t, _) = new ExampleEncoder(Tok, 512, false).Encode(segments);
        int prompt = Tok.Encode(segments[0].Text, true, false).Count;
        Assert.All(t!.Labels[..prompt], l => Assert.Equal(I, l));
        Assert.Equal(new[] { 15043, 2 }, t.Labels[prompt..]); // ▁Hello </s>
        Assert.Equal(new[] { 15043, 2 }, t.InputIds[prompt..]);
    }

    [Fact]
    public void Instruction_with_input_under_llama2_chat_joins_them_in_the_user_turn()
    {
        var ex = new InstructionExample("t:1", "Translate", "bonjour", "hello", null);
        var text = Llama2ChatTemplate.ToText(PromptTemplates.Render(ex, QLoraNet.Training.Config.TemplateKind.Llama2Chat, "Sys"));
        Assert.Equal("<s>[INST] <<SYS>>\nSys\n<</SYS>>\n\nTranslate\n\nbonjour [/INST] hello </s>", text);
    }

    [Fact]
    public void Template_none_renders_bare_contents_with_eos_after_each_answer()
    {
        var chat = new ChatExample("t:1", "S", [new ChatTurn("Hi", "Hello"), new ChatTurn("Bye", "Ciao")]);
        var segments = PromptTemplates.Render(chat, QLoraNet.Training.Config.TemplateKind.None, null);
        Assert.Equal(new Segment[] { new("S", false, Bos: true), new("Hi", false), new("Hello", true, Eos: true),
            new("Bye", false), new("Ciao", true, Eos: true) }, segments);
        var (t, _) = new ExampleEncoder(Tok, 512, false).Encode(segments);
        // <s> ▁S ▁Hi | ▁Hello </s> | ▁By e | ▁C iao </s>: only the answers and their EOS are trained.
        Assert.Equal(new[] { I, I, I, 15043, 2 }, t!.Labels[..5]);
        Assert.Equal(2, t.Labels[^1]);
        Assert.Equal(3, t.TrainedTokens - Tok.Encode("Ciao", false, false).Count); // ▁Hello </s> ... </s>
    }

    [Fact]
    public void Completion_trains_every_token_but_the_first()
    {
        var segments = PromptTemplates.Render(new CompletionExample("t:1", "Hello world!"), QLoraNet.Training.Config.TemplateKind.Llama2Chat, "ignored");
        var (t, _) = new ExampleEncoder(Tok, 512, false).Encode(segments);
        Assert.Equal(new[] { 1, 15043, 3186, 29991, 2 }, t!.InputIds);
        Assert.Equal(new[] { I, 15043, 3186, 29991, 2 }, t.Labels);
    }

    [Fact]
    public void Train_on_inputs_trains_the_prompt_too()
    {
        var (t, _) = new ExampleEncoder(Tok, 512, trainOnInputs: true).Encode(Llama2ChatTemplate.Render(null, [new ChatTurn("Hi", "Hello")]));
        Assert.Equal(I, t!.Labels[0]);
        Assert.Equal(t.InputIds[1..], t.Labels[1..]);
    }

    [Fact]
    public void Truncation_keeps_the_head_and_drops_examples_without_a_response_token()
    {
        var segments = Llama2ChatTemplate.Render(null, [new ChatTurn("Hi", "Hello there, how are you")]);
        var (cut, outcome) = new ExampleEncoder(Tok, 11, false).Encode(segments);
        Assert.Equal(ExampleEncoder.Outcome.Truncated, outcome);
        Assert.Equal(11, cut!.Length);
        Assert.Equal(new[] { 15043, 727 }, cut.Labels[9..]); // ▁Hello ▁there: the prompt (9) and two response tokens
        var (none, dropped) = new ExampleEncoder(Tok, 9, false).Encode(segments);
        Assert.Null(none);
        Assert.Equal(ExampleEncoder.Outcome.Dropped, dropped);
    }
}
