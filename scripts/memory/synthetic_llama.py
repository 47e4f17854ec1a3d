#!/usr/bin/env python3
"""Writes a random bf16 Llama (config.json + model.safetensors + the tiny model's tokenizer) for host-memory
measurements of loading: big enough that the weights, not the runtime, dominate the resident set.
Pure Python (no numpy/torch): one 1 Mi-value pattern of N(0, 0.02) bf16 values is tiled over every matrix.

    python3 scripts/memory/synthetic_llama.py OUT_DIR [--hidden 2048 --intermediate 5632 --layers 8 --heads 16]
"""
import argparse, json, os, random, shutil, struct

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--hidden", type=int, default=2048)
p.add_argument("--intermediate", type=int, default=5632)
p.add_argument("--layers", type=int, default=8)
p.add_argument("--heads", type=int, default=16)
p.add_argument("--vocab", type=int, default=32000)
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))
tiny = os.path.join(here, "..", "..", "models", "tiny-llama-sotu")
for f in ("tokenizer.model", "tokenizer_config.json"):
    shutil.copy(os.path.join(tiny, f), a.out)
json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.hidden,
           "intermediate_size": a.intermediate, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
           "num_key_value_heads": a.heads, "vocab_size": a.vocab, "rms_norm_eps": 1e-5,
           "max_position_embeddings": 2048, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "bos_token_id": 1, "eos_token_id": 2}, open(os.path.join(a.out, "config.json"), "w"), indent=2)

h, i = a.hidden, a.intermediate
tensors = [("model.embed_tokens.weight", [a.vocab, h])]
for l in range(a.layers):
    q = f"model.layers.{l}."
    tensors += [(q + "self_attn.q_proj.weight", [h, h]), (q + "self_attn.k_proj.weight", [h, h]),
                (q + "self_attn.v_proj.weight", [h, h]), (q + "self_attn.o_proj.weight", [h, h]),
                (q + "mlp.gate_proj.weight", [i, h]), (q + "mlp.up_proj.weight", [i, h]),
                (q + "mlp.down_proj.weight", [h, i]),
                (q + "input_layernorm.weight", [h]), (q + "post_attention_layernorm.weight", [h])]
tensors += [("model.norm.weight", [h]), ("lm_head.weight", [a.vocab, h])]

random.seed(0)
bf16 = lambda x: struct.pack("<f", x)[2:]  # upper half of the fp32 bits (truncation is fine for noise)
pattern = b"".join(bf16(random.gauss(0, 0.02)) for _ in range(1 << 20))
one = bf16(1.0)
header, offset = {"__metadata__": {"format": "pt"}}, 0
for name, shape in tensors:
    n = 1
    for d in shape: n *= d
    header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + 2 * n]}
    offset += 2 * n
hb = json.dumps(header).encode()
hb += b" " * (-len(hb) % 8)
with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(hb)) + hb)
    for name, shape in tensors:
        n = 1
        for d in shape: n *= d
        if len(shape) == 1:
            f.write(one * n)
            continue
        full, rest = divmod(2 * n, len(pattern))
        for _ in range(full): f.write(pattern)
        f.write(pattern[:rest])
print(f"{a.out}: {offset / 1e9:.3f} GB of bf16 weights")
