#!/usr/bin/env python3
"""Why the Mistral fixture's pair log-likelihoods of scripts/gpu/eval_parity.sh differed from transformers on the
H200 (2026-11-30, up to 15.85) while FamilyParityTests and FamilyScoringTests pass: run on a CPU with torch and
sentencepiece (no transformers needed), from the repository root:

    python3 scripts/check_mistral_pair_tokenization.py DIR/hf-mistral.json DIR/ours-mistral.json

An independent fp32 forward of tests/fixtures/families/mistral (written from the config: RMSNorm, RoPE, grouped
queries, the window of 16 keys q-15..q, SwiGLU) is first checked against the fixture's transformers logits
(reference.json, up to 223 ids, past the window). Each pair is then encoded as the harness does (context ids, then
the rest of context + continuation) by BPE over the tokenizer.model's pieces, with and without the dummy-prefix
"\u2581", and scored by that forward. Ours equals the "with prefix" numbers and transformers the "without prefix"
ones, both within ~2e-5: the two sides scored different ids; the model and our scorer agree.
"""
import json, math, struct, sys
import sentencepiece
import torch

D = "tests/fixtures/families/mistral"
cfg = json.load(open(f"{D}/config.json"))
raw = open(f"{D}/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
W = {}
for k, v in json.loads(raw[8:8 + n]).items():
    if k != "__metadata__":
        a, b = v["data_offsets"]
        dt = {"BF16": torch.bfloat16, "F32": torch.float32, "F16": torch.float16}[v["dtype"]]
        W[k] = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=dt).reshape(v["shape"]).float()
nh, nkv, hd, eps, win = (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"],
                         cfg["sliding_window"])


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def forward(ids):                                                                    # (T) -> (T, vocab) fp32
    T = len(ids)
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    inv = 1.0 / (cfg["rope_parameters"]["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    f = torch.outer(torch.arange(T).float(), inv)
    cos, sin = torch.cat([f, f], -1).cos(), torch.cat([f, f], -1).sin()
    rot = lambda t: torch.cat([-t[..., hd // 2:], t[..., :hd // 2]], -1)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allow = (j <= i) & (j > i - win)                                                 # transformers' sliding window
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q, k, v = ((h @ W[p + f"self_attn.{m}_proj.weight"].T).view(T, -1, hd).transpose(0, 1) for m in "qkv")
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
        s = (q @ k.transpose(1, 2) / math.sqrt(hd)).masked_fill(~allow, float("-inf"))
        x = x + (s.softmax(-1) @ v).transpose(0, 1).reshape(T, nh * hd) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g = torch.nn.functional.silu(h @ W[p + "mlp.gate_proj.weight"].T) * (h @ W[p + "mlp.up_proj.weight"].T)
        x = x + g @ W[p + "mlp.down_proj.weight"].T
    return rms(x, W["model.norm.weight"]) @ W["lm_head.weight"].T


sp = sentencepiece.SentencePieceProcessor(model_file=f"{D}/tokenizer.model")
vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
# Merges as a tokenizers BPE rebuilt from the .model ranks them: every split of a piece, by the piece's score.
merges = sorted(((p[:i], p[i:], sp.get_score(vocab[p])) for p in vocab for i in range(1, len(p))
                 if p[:i] in vocab and p[i:] in vocab), key=lambda m: -m[2])
rank = {(a, b): r for r, (a, b, _) in enumerate(merges)}


def encode(text, prefix):                                                            # BOS + BPE pieces
    w = []
    for ch in ("\u2581" if prefix else "") + text.replace(" ", "\u2581"):
        w += [ch] if ch in vocab else ["<0x%02X>" % b for b in ch.encode()]
    while True:
        best = min(((rank[(w[i], w[i + 1])], i) for i in range(len(w) - 1) if (w[i], w[i + 1]) in rank), default=None)
        if best is None:
            return [1] + [vocab[p] for p in w]
        i = best[1]
        w[i:i + 2] = [w[i] + w[i + 1]]


def score(ctx, cont):
    lp = forward((ctx + cont)[:-1]).double().log_softmax(-1)
    return sum(lp[len(ctx) - 1 + i, c].item() for i, c in enumerate(cont))


ref = json.load(open(f"{D}/reference.json"))
worst = max((forward(c["input_ids"])[-1] - torch.tensor(c["last_logits"])).abs().max().item() for c in ref["logits"])
print(f"forward vs the fixture's transformers logits: max |diff| {worst:.2e}")
hf = {p["id"]: p["logprob"] for p in json.load(open(sys.argv[1]))["pairs"]}
ours = {int(s["origin"].rsplit(":", 1)[1]) - 1: s["loglikelihoods"][0]
        for s in json.load(open(sys.argv[2]))["samples"]["loglik_parity"]}
pairs = json.load(open("tests/fixtures/eval/loglik_reference.json"))["models"]["tiny-llama-sotu"]["pairs"]
d_ours = d_hf = 0.0
for i, p in enumerate(pairs):
    c, k = p["context"], p["continuation"]
    m = len(c) - len(c.rstrip())
    c, k = (c[:-m], c[-m:] + k) if m else (c, k)
    got = {}
    for prefix in (True, False):
        ctx, whole = encode(c, prefix), encode(c + k, prefix)
        got[prefix] = score(ctx, whole[len(ctx):])
    d_ours, d_hf = max(d_ours, abs(got[True] - ours[i])), max(d_hf, abs(got[False] - hf[i]))
    print(f"pair {i:2}: with prefix {got[True]:11.6f} ours {ours[i]:11.6f} | "
          f"without {got[False]:11.6f} transformers {hf[i]:11.6f}")
print(f"max |with prefix - ours| {d_ours:.2e}, max |without prefix - transformers| {d_hf:.2e}")
