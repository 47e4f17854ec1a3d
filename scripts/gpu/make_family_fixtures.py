#!/usr/bin/env python3
"""Tiny pretrained models of each model family, with Hugging Face transformers' reference outputs.

Issue 12 item 6 (model families), issue 17 (BitNet b1.58 fixture), issue 18 (log-likelihood parity).
Runs on the GPU machine (Python 3.12, torch 2.11 CUDA, transformers 5.17, tokenizers 0.23, sentencepiece 0.2.2,
safetensors, jinja2; no network). For each family it
  1. trains a tokenizer in the family's own style on this repository's text (README, docs, configs, C# sources,
     the sales chats) and writes the files the hub ships for that family (tokenizer.json or tokenizer.model,
     tokenizer_config.json with the family's chat template);
  2. builds the transformers architecture from a config (random init, fixed seed), trains it for a few hundred
     AdamW steps in fp32 on the GPU (eager attention) on the same text rendered with the family's chat template,
     so greedy continuations have clear margins;
  3. saves it with save_pretrained as bfloat16 (BitNet: packed ternary, written in the layout
     BitNetForCausalLM.from_pretrained loads, and checked by loading it back);
  4. reloads it in float32 on the CPU with eager attention and writes reference.json (tokenizer probes, chat
     template texts and ids, full last-position logits, 24-step greedy continuations with margins, held-out loss).
It also writes tests/fixtures/eval/loglik_reference.json for models/tiny-llama-sotu and the llama3 fixture,
scored with lm-evaluation-harness's HFLM rules.

Usage (from the repository root):
    python3 scripts/gpu/make_family_fixtures.py --repo . --out /tmp/fixtures [--families llama3,mistral,...]
Outputs land under OUT/tests/fixtures/...; copy that tree over the repository's.
"""
import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# BitNet's activation/weight quantizers are decorated with @torch.compile; with dynamo off they run eagerly, i.e.
# exactly the plain fp32 arithmetic a port reproduces (and no C compiler is needed on the CPU).
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import glob
import hashlib
import io
import json
import math
import re
import shutil
import sys
import time
import traceback
from pathlib import Path

FAMILIES = ["llama3", "mistral", "qwen2", "gemma", "gemma2", "bitnet"]
SEED = 1234
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Chat templates, verbatim from the checkpoints named (tokenizer_config.json "chat_template").
# --------------------------------------------------------------------------------------------------------------

# meta-llama/Meta-Llama-3-8B-Instruct (the "\n\n" are real newlines inside the Jinja string literal).
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# mistralai/Mistral-7B-Instruct-v0.1 (current revision; identical to v0.2's). Line breaks are real newlines, the
# '\\n\\n' inside the string literal is a Jinja escape (backslash n) as in the hub's JSON.
MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial "
    "optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)

# Qwen/Qwen2.5-7B-Instruct (ChatML with Hermes-style tools). Raw string: the \n inside literals are Jinja escapes.
QWEN25_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}'''

# google/gemma-7b-it and google/gemma-2-2b-it (the "\n" are real newlines inside the Jinja string literals).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# Pre-tokenizer Split patterns, exactly as in Meta-Llama-3's and Qwen2's tokenizer.json.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama 3.1's first eleven special tokens, in its order (ids follow the BPE vocabulary, as 128000.. do).
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
# Qwen2.5's first tokens after its BPE vocabulary; <tool_call> and </tool_call> are added but NOT special there.
QWEN2_ADDED = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
               ("<tool_call>", False), ("</tool_call>", False)]

PROBES = [
    "",
    " ",
    "Hello world",
    " Hello world",
    "Hello world ",
    "Hello   world",
    "   leading and trailing   ",
    "tab\tseparated\tvalues",
    "\t\tindented with tabs",
    "line one\nline two",
    "para one\n\npara two",
    "windows\r\nline\r\nends",
    "trailing newline\n",
    "\n\n\n",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
    "M\u00fcller \u00fcber Stra\u00dfe",
    "e\u0301 combining acute vs \u00e9 precomposed, A\u030a vs \u00c5",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u4e2d\u6587\u6587\u672c",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "emoji \U0001F600 and \U0001F44D\U0001F3FD and family \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",
    "\U0001F3F3\ufe0f\u200d\U0001F308 flag",
    "1234567890123",
    "Price: $219.00, 2-year warranty, 10% off",
    "3.14159 and 1,000,000 and 0x1F",
    "it's don't they're we've I'm you'll he'd",
    "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D",
    "Wait... what?!?! (really) [yes] {no} <maybe>",
    "--- *** ### !!! ??? ...",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac, \u0440\u0443\u0441\u0441\u043a\u0438\u0439, "
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629, \u05e2\u05d1\u05e8\u05d9\u05ea and English mixed",
    "KR-HL-300 SKU WELCOME10",
    "<|begin_of_text|>Hello<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|im_start|>user\nHi<|im_end|>\n<tool_call>",
    "<start_of_turn>user\nHi<end_of_turn>\n",
    "</s> and <s> and <unk>",
    "<bos><eos><pad>",
    "[INST] hi [/INST]",
]

# (context, continuation) candidates for the log-likelihood reference; the first 20 that give a non-empty
# continuation encoding for every model are kept (the harness asserts on an empty one).
LOGLIK_CANDIDATES = [
    ("The capital of France is", " Paris"),
    ("The capital of France is ", "Paris"),
    ("Water boils at 100 degrees", " Celsius at sea level."),
    ("2 + 2 =", " 4"),
    ("The largest planet in our solar system is", " Jupiter"),
    ("Question: What color is the sky on a clear day?\nAnswer:", " blue"),
    ("The Beacon 300 headlamp is SKU", " KR-HL-300."),
    ("Ridge Club membership is free and earns", " 5% back in points on every order."),
    ("hello", "world"),
    ("run", "ning"),
    ("The quick brown fox jumps over the lazy", " dog"),
    ("Answer:  ", "yes"),
    ("A triangle has", " three sides."),
    ("The chemical symbol for gold is", " Au"),
    ("un", "believable"),
    ("In 1969, humans first landed on the", " Moon"),
    ("1234", "5678"),
    ("Hello,", " world!"),
    ("The Loft down jacket is ", "$219.00."),
    ("The year was 19", "84"),
    ("Photosynthesis converts sunlight into", " chemical energy"),
    ("The opposite of hot is", " cold"),
    ("Shakespeare wrote", " Hamlet and Macbeth."),
    ("New York", "er"),
]


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------

def dump_json(obj, path):
    """JSON with ASCII escapes (no editor can renormalise the probes) and numeric arrays on one line."""
    s = json.dumps(obj, indent=1, ensure_ascii=True)
    s = re.sub(r"\[\s*((?:-?[0-9][0-9.eE+-]*|-?Infinity|NaN)(?:,\s*(?:-?[0-9][0-9.eE+-]*|-?Infinity|NaN))*)\s*\]",
               lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(",")) + "]", s)
    Path(path).write_text(s + "\n", encoding="utf-8")


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def jinja_render(template, messages, add_generation_prompt, **special):
    """transformers' chat-template environment: sandboxed, trim_blocks, lstrip_blocks, loopcontrols, raise_exception."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            **special)


# --------------------------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------------------------

class Corpus:
    """Training and held-out text, all from this repository (public-domain-free of third-party text)."""

    PLAIN_FILES = ["README.md", "datasets/sales/README.md", "docs/QUANTIZATION.md", "docs/BENCHMARKS.md",
                   "docs/RESULTS.md", "configs/quickstart.yaml", "configs/llama2-7b-sales.yaml"]
    CODE_BUDGET = 120_000

    def __init__(self, repo: Path):
        self.repo = repo
        self.files = {}
        read = lambda p: (repo / p).read_text(encoding="utf-8")
        self.train_rows = [json.loads(l) for l in read("datasets/sales/train.jsonl").splitlines() if l.strip()]
        self.val_rows = [json.loads(l) for l in read("datasets/sales/validation.jsonl").splitlines() if l.strip()]
        self.files["datasets/sales/train.jsonl"] = sha256_bytes((repo / "datasets/sales/train.jsonl").read_bytes())
        self.files["datasets/sales/validation.jsonl"] = sha256_bytes(
            (repo / "datasets/sales/validation.jsonl").read_bytes())
        self.plain = []
        for p in self.PLAIN_FILES:
            if (repo / p).exists():
                t = read(p)
                self.plain.append(t)
                self.files[p] = sha256_bytes(t.encode("utf-8"))
        used = 0
        for p in sorted(glob.glob(str(repo / "src" / "**" / "*.cs"), recursive=True)):
            t = Path(p).read_text(encoding="utf-8")
            if used + len(t) > self.CODE_BUDGET:
                continue
            used += len(t)
            rel = str(Path(p).relative_to(repo))
            self.plain.append(t)
            self.files[rel] = sha256_bytes(t.encode("utf-8"))
        readme = read("README.md")
        paras = [re.sub(r"\s+", " ", p).strip() for p in readme.split("\n\n")]
        self.paragraphs = [p for p in paras if len(p.split()) >= 25 and not p.startswith(("|", "```", "#", "-"))]

    def tokenizer_texts(self):
        """Texts the tokenizers are trained on: the chats' contents (no template markup) and the plain files."""
        out = []
        for row in self.train_rows:
            for m in row["messages"]:
                out.append(m["content"])
        out.extend(self.plain)
        return out

    def lines(self):
        lines = []
        for t in self.tokenizer_texts():
            lines.extend(l for l in t.split("\n") if l.strip())
        return lines

    def digest(self):
        h = hashlib.sha256()
        for k in sorted(self.files):
            h.update(k.encode() + b"\0" + self.files[k].encode() + b"\n")
        return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------------------

def train_bpe(texts, vocab_size, split_regex, nfc):
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    vocab = model["vocab"]
    assert sorted(vocab.values()) == list(range(len(vocab))), "BPE ids not contiguous"
    return vocab, merges


def added_token(i, content, special):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def build_llama3_tokenizer(corpus, out: Path):
    """Byte-level BPE exactly in Meta-Llama-3's tokenizer.json shape (no normalizer, Split + ByteLevel, BOS by a
    TemplateProcessing post-processor, ignore_merges), 1013 BPE entries + 11 specials = 1024 ids."""
    from tokenizers import Tokenizer
    n_special = len(LLAMA3_SPECIALS)
    vocab, merges = train_bpe(corpus.tokenizer_texts(), 1024 - n_special, LLAMA3_SPLIT, nfc=False)
    base = len(vocab)
    ids = {s: base + i for i, s in enumerate(LLAMA3_SPECIALS)}
    bos = ids["<|begin_of_text|>"]
    tj = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added_token(ids[s], s, True) for s in LLAMA3_SPECIALS],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos],
                                                      "tokens": ["<|begin_of_text|>"]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
    text = json.dumps(tj, indent=2, ensure_ascii=False)
    Tokenizer.from_str(text)  # must load
    (out / "tokenizer.json").write_text(text, encoding="utf-8")
    tc = {
        "added_tokens_decoder": {str(ids[s]): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                               "single_word": False, "special": True} for s in LLAMA3_SPECIALS},
        "bos_token": "<|begin_of_text|>",
        "chat_template": LLAMA3_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 512,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"ids": ids, "vocab_size": base + n_special, "bpe_size": base, "bos": bos,
            "eos_list": [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]]}


def build_qwen2_tokenizer(corpus, out: Path):
    """Byte-level BPE in Qwen2's tokenizer.json shape (NFC normalizer, Split on single digits + ByteLevel, no BOS,
    merges serialised as pairs as tokenizers >= 0.20 writes them), 1019 BPE entries + 5 added = 1024 ids."""
    from tokenizers import Tokenizer
    vocab, merges = train_bpe(corpus.tokenizer_texts(), 1024 - len(QWEN2_ADDED), QWEN2_SPLIT, nfc=True)
    base = len(vocab)
    ids = {s: base + i for i, (s, _) in enumerate(QWEN2_ADDED)}
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tj = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added_token(ids[s], s, sp) for s, sp in QWEN2_ADDED],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False}, bl]},
        "post_processor": dict(bl),
        "decoder": dict(bl),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }
    text = json.dumps(tj, indent=2, ensure_ascii=False)
    Tokenizer.from_str(text)
    (out / "tokenizer.json").write_text(text, encoding="utf-8")
    tc = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(ids[s]): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                               "single_word": False, "special": sp} for s, sp in QWEN2_ADDED},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": QWEN25_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 512,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"ids": ids, "vocab_size": base + len(QWEN2_ADDED), "bpe_size": base,
            "endoftext": ids["<|endoftext|>"], "im_end": ids["<|im_end|>"]}


def train_sp(lines, **kw):
    import sentencepiece as spm
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, model_type="bpe",
                                   vocab_size=1024, character_coverage=0.9999, byte_fallback=True, split_digits=True,
                                   allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
                                   normalization_rule_name="identity", num_threads=1, max_sentence_length=16384,
                                   shuffle_input_sentence=False, hard_vocab_limit=False, minloglevel=2, **kw)
    return buf.getvalue()


def build_mistral_tokenizer(corpus, out: Path):
    """SentencePiece BPE like Llama 2 / Mistral v0.1: byte fallback, dummy prefix, digits split, <unk>=0 <s>=1 </s>=2."""
    proto = train_sp(corpus.lines(), add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                     unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>")
    (out / "tokenizer.model").write_bytes(proto)
    dec = {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                    "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])}
    tc = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": dec,
        "additional_special_tokens": [],
        "bos_token": "<s>",
        "chat_template": MISTRAL_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": True,
        "model_max_length": 512,
        "pad_token": None,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return sp_info(proto)


def build_gemma_tokenizer(corpus, out: Path):
    """SentencePiece BPE like Gemma's: <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4 (control), <start_of_turn>=5 and
    <end_of_turn>=6 user-defined,
    no dummy prefix, identity normalisation, whitespace-only pieces, byte fallback, digits split."""
    proto = train_sp(corpus.lines(), add_dummy_prefix=False, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                     pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
                     control_symbols=["<mask>"], user_defined_symbols=["<start_of_turn>", "<end_of_turn>"])
    (out / "tokenizer.model").write_bytes(proto)
    # <mask> = 4 as in Gemma (transformers' GemmaTokenizer adds a mask token; absent, it would get id 1024)
    names = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    dec = {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                    "special": True} for i, c in enumerate(names)}
    tc = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": dec,
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
        "bos_token": "<bos>",
        "chat_template": GEMMA_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "legacy": None,
        "mask_token": "<mask>",
        "model_max_length": 512,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return sp_info(proto)


def sp_info(proto):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_proto=proto)
    return {"vocab_size": sp.get_piece_size(), "sha256": sha256_bytes(proto),
            "bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(), "pad": sp.pad_id(),
            "first_pieces": [sp.id_to_piece(i) for i in range(8)]}


class FallbackTokenizer:
    """Only used if transformers cannot load the files (logged loudly): raw tokenizers / sentencepiece + Jinja."""

    def __init__(self, folder: Path):
        tc = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.template = tc.get("chat_template")
        self.bos_token, self.eos_token = tc.get("bos_token"), tc.get("eos_token")
        if (folder / "tokenizer.json").exists():
            from tokenizers import Tokenizer
            self.kind, self.tk = "tokenizers", Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.bos_token_id = self.tk.token_to_id(self.bos_token) if self.bos_token else None
            self.eos_token_id = self.tk.token_to_id(self.eos_token) if self.eos_token else None
        else:
            import sentencepiece as spm
            self.kind, self.sp = "sentencepiece", spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
            self.bos_token_id, self.eos_token_id = self.sp.bos_id(), self.sp.eos_id()
            self.add_bos = tc.get("add_bos_token", True)

    def __call__(self, text, add_special_tokens=True):
        if self.kind == "tokenizers":
            return {"input_ids": self.tk.encode(text, add_special_tokens=add_special_tokens).ids}
        ids = self.sp.encode(text)
        return {"input_ids": ([self.bos_token_id] if add_special_tokens and self.add_bos else []) + ids}

    def decode(self, ids, skip_special_tokens=False):
        if self.kind == "tokenizers":
            return self.tk.decode(ids, skip_special_tokens=skip_special_tokens)
        return self.sp.decode(ids)

    def convert_ids_to_tokens(self, ids):
        if self.kind == "tokenizers":
            return [self.tk.id_to_token(i) for i in ids]
        return [self.sp.id_to_piece(i) for i in ids]

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        text = jinja_render(self.template, messages, add_generation_prompt, bos_token=self.bos_token,
                            eos_token=self.eos_token)
        return self(text, add_special_tokens=False)["input_ids"] if tokenize else text


def load_hf_tokenizer(folder: Path, notes: list):
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
        notes.append(f"transformers tokenizer class: {type(tok).__name__}")
        return tok, type(tok).__name__
    except Exception as e:
        log(f"!! AutoTokenizer failed for {folder.name}: {e!r}")
        traceback.print_exc()
        notes.append(f"AutoTokenizer failed ({e!r}); references use the fallback (raw backend + Jinja)")
        return FallbackTokenizer(folder), "FALLBACK"


def chat_ids(tok, messages, gen):
    r = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen)
    if hasattr(r, "keys"):
        r = r["input_ids"]
    if hasattr(r, "tolist"):
        r = r.tolist()
    if r and isinstance(r[0], list):
        r = r[0]
    return [int(x) for x in r]


def enc(tok, text, add_special_tokens=True):
    return [int(x) for x in tok(text, add_special_tokens=add_special_tokens)["input_ids"]]


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------

def make_config(cls, kwargs, notes):
    """Build a transformers config; a keyword this version rejects is dropped (and logged), rope_parameters falls
    back to rope_theta/rope_scaling."""
    kw = dict(kwargs)
    known = getattr(cls, "__dataclass_fields__", None)
    if known:
        for k in [k for k in kw if k not in known]:
            notes.append(f"{cls.__name__} has no field `{k}`: not passed")
            log(f"!! {cls.__name__} has no field {k}")
            kw.pop(k)
    for _ in range(10):
        try:
            return cls(**kw)
        except TypeError as e:
            m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
            if not m:
                raise
            bad = m.group(1)
            notes.append(f"{cls.__name__} rejected `{bad}`")
            log(f"!! {cls.__name__} rejected {bad}")
            val = kw.pop(bad)
            if bad == "rope_parameters":
                kw["rope_theta"] = val.get("rope_theta", 10000.0)
                if val.get("rope_type", "default") != "default":
                    kw["rope_scaling"] = {k: v for k, v in val.items() if k != "rope_theta"}
    raise RuntimeError("config construction did not converge")


def new_model(cls, cfg, seed):
    import torch
    try:
        cfg._attn_implementation = "eager"
    except Exception:
        pass
    torch.manual_seed(seed)
    return cls(cfg)


def token_stream(tok, texts_chat, texts_plain, eos_id, bos_plain):
    ids = []
    for t in texts_chat:
        ids.extend(enc(tok, t, add_special_tokens=False))
    for t in texts_plain:
        ids.extend(enc(tok, t, add_special_tokens=bos_plain))
        ids.append(eos_id)
    return ids


def train_loop(model, stream, steps, lr, device, seed, batch=32, seq=128, val=None):
    import torch
    import torch.nn.functional as F
    torch.use_deterministic_algorithms(True, warn_only=True)
    g = torch.Generator().manual_seed(seed)
    data = torch.tensor(stream, dtype=torch.long)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    warm = max(1, steps // 15)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm))))
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(data) - seq - 1, (batch,), generator=g)
        x = torch.stack([data[i:i + seq + 1] for i in idx.tolist()]).to(device)
        logits = model(input_ids=x[:, :-1]).logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(f"   step {step:4d} loss {loss.item():.4f}")
    model.eval()
    val_loss = None
    if val is not None:
        with torch.no_grad():
            v = torch.tensor(val[:512], dtype=torch.long, device=device)[None]
            lg = model(input_ids=v).logits.float()
            val_loss = F.cross_entropy(lg[0, :-1], v[0, 1:]).item()
    return {"first_loss": losses[0], "last_loss": sum(losses[-20:]) / 20, "steps": steps, "lr": lr,
            "batch": batch, "seq": seq, "heldout_loss_fp32_training_weights": val_loss}


def mdev(model):
    return next(model.parameters()).device


def greedy(model, ids, n=24):
    """Argmax decoding by full recompute (no KV cache), never stopping at EOS."""
    import torch
    cur = list(ids)
    gen, margins, first = [], [], None
    with torch.no_grad():
        for _ in range(n):
            lg = model(input_ids=torch.tensor([cur], device=mdev(model))).logits[0].float().cpu()
            last = lg[-1]
            if first is None:
                first = lg
            top2 = torch.topk(last, 2)
            nxt = int(top2.indices[0])
            margins.append(float(top2.values[0] - top2.values[1]))
            gen.append(nxt)
            cur.append(nxt)
    return gen, margins, first


def generate_check(model, ids, gen):
    """transformers' own generate (KV cache, incl. sliding-window caches) must give the same argmax ids."""
    import torch
    try:
        d = mdev(model)
        out = model.generate(torch.tensor([ids], device=d),
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=d),
                             max_new_tokens=len(gen), do_sample=False, num_beams=1, repetition_penalty=1.0,
                             pad_token_id=0)
        new = out[0, len(ids):].tolist()
        return {"generate_ids": new, "agrees_on_common_prefix": new == gen[:len(new)], "length": len(new)}
    except Exception as e:
        return {"error": repr(e)}


def logits_case(model, tok, ids, name, text):
    import torch
    gen, margins, lg = greedy(model, ids)
    last = lg[-1]
    top5 = torch.topk(last, 5)
    return {
        "name": name,
        "text": text,
        "input_ids": ids,
        "last_logits": [float(x) for x in last.tolist()],
        "top5_ids": [int(i) for i in top5.indices.tolist()],
        "top5_logits": [float(x) for x in top5.values.tolist()],
        "position_logit_sums": [float(x) for x in lg.sum(-1).tolist()],
        "position_argmax": [int(x) for x in lg.argmax(-1).tolist()],
        "greedy_24": {"ids": gen, "text": tok.decode(gen), "margins": margins, "min_margin": min(margins)},
        "generate_check": generate_check(model, ids, gen),
    }


def heldout(model, ids):
    import torch
    import torch.nn.functional as F
    with torch.no_grad():
        lg = model(input_ids=torch.tensor([ids], device=mdev(model))).logits[0].float().cpu()
        return float(F.cross_entropy(lg[:-1], torch.tensor(ids[1:])).item())


def rope_buffers(model):
    out = {}
    for name, buf in model.named_buffers():
        if "inv_freq" in name and "original" not in name:
            out[name] = [float(x) for x in buf.float().tolist()]
    return out


# --------------------------------------------------------------------------------------------------------------
# BitNet b1.58: QAT training, packing, and the checks that transformers loads the packed file back identically
# --------------------------------------------------------------------------------------------------------------

def act_quant(x):
    """transformers' ActQuant (absmax per token to int8 range, dequantised): the same op order, in fp32."""
    dtype = x.dtype
    x = x.float()
    s = 127 / x.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)
    return ((x * s).round().clamp(-128, 127) / s).to(dtype)


def ternarize(w):
    """BitNet b1.58 absmean: scale = mean|W|, W_t = clamp(round(W / scale), -1, 1)."""
    scale = w.float().abs().mean().clamp(min=1e-5)
    return (w.float() / scale).round().clamp(-1, 1), scale


def pack_ternary(t):
    """uint8 [out/4, in]: value+1 (0,1,2) of row k*out/4 + r sits in bits 2k..2k+1 of byte row r (k = 0..3, LSB
    first) — the layout of transformers.integrations.bitnet.pack_weights/unpack_weights."""
    import torch
    rows = t.shape[0]
    assert rows % 4 == 0
    r = rows // 4
    u = (t.to(torch.int16) + 1).to(torch.uint8)
    packed = torch.zeros((r, t.shape[1]), dtype=torch.uint8)
    for k in range(4):
        packed |= u[k * r:(k + 1) * r] << (2 * k)
    return packed


def unpack_ternary(p):
    import torch
    r = p.shape[0]
    out = torch.zeros((4 * r, p.shape[1]), dtype=torch.int8)
    for k in range(4):
        out[k * r:(k + 1) * r] = ((p >> (2 * k)) & 3).to(torch.int8) - 1
    return out


def make_ternary_linear_cls():
    import torch
    import torch.nn.functional as F

    class TernaryLinear(torch.nn.Module):
        """mode "qat": latent fp32 weight, ternary weight and int8 activations through straight-through estimators.
        mode "autobitlinear": F.linear(ActQuant(x), W_t) * weight_scale (transformers' AutoBitLinear, offline).
        mode "bitlinear": F.linear(round(x*s), W_t) / (s * weight_scale) (transformers' BitLinear)."""

        def __init__(self, lin):
            super().__init__()
            self.weight = torch.nn.Parameter(lin.weight.detach().clone().float())
            self.mode = "qat"
            self.register_buffer("tern", torch.zeros(0), persistent=False)
            self.register_buffer("scale", torch.zeros(1), persistent=False)

        def forward(self, x):
            if self.mode == "qat":
                w = self.weight
                t, s = ternarize(w)
                wq = w + (t * s - w).detach()
                xq = x + (act_quant(x) - x).detach()
                return F.linear(xq, wq)
            if self.mode == "autobitlinear":
                return F.linear(act_quant(x), self.tern.to(x.dtype)) * self.scale.to(x.dtype)
            xf = x.float()
            s = 127 / xf.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
            xi = (xf * s).round().clamp(-128, 127)
            return F.linear(xi.to(x.dtype), self.tern.to(x.dtype)) / (self.scale.to(x.dtype) * s.to(x.dtype))

    return TernaryLinear


LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def swap_linears(model, cls):
    swapped = {}
    for name, mod in list(model.named_modules()):
        for child in LINEAR_NAMES:
            lin = getattr(mod, child, None)
            if lin is not None and lin.__class__.__name__ == "Linear":
                t = cls(lin)
                setattr(mod, child, t)
                swapped[f"{name}.{child}"] = t
    return swapped


# --------------------------------------------------------------------------------------------------------------
# Per-family pipeline
# --------------------------------------------------------------------------------------------------------------

CONVERSATIONS = {
    "single_turn": [
        {"role": "user", "content": "Do you have a loyalty program?"},
        {"role": "assistant", "content": "Ridge Club membership is free and earns 5% back in points on every order."},
    ],
    "multi_turn": [
        {"role": "user", "content": "How much is the Loft down jacket?"},
        {"role": "assistant", "content": "The Loft down jacket is $219.00."},
        {"role": "user", "content": "  Is it warm?  "},
        {"role": "assistant", "content": "Yes. It is rated to -10\u00b0C and packs into its own pocket.\n"},
    ],
    "with_system": [
        {"role": "system", "content": "You are the sales assistant of Kestrel Ridge Outfitters. Answer briefly."},
        {"role": "user", "content": "What is the SKU of the Beacon 300 headlamp?"},
        {"role": "assistant", "content": "The Beacon 300 headlamp is SKU KR-HL-300."},
    ],
}


def chat_section(tok, family):
    out = {}
    for name, msgs in CONVERSATIONS.items():
        variants = []
        cases = [("full", msgs, False), ("full", msgs, True), ("prompt", msgs[:-1], True)]
        if family in ("gemma", "gemma2") and name == "with_system":
            try:
                tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
                variants.append({"messages": msgs, "error": None, "note": "UNEXPECTED: template accepted system"})
            except Exception as e:
                variants.append({"messages": msgs, "add_generation_prompt": False,
                                 "error": f"{type(e).__name__}: {e}"})
            msgs = msgs[1:]
            cases = [("system_omitted", msgs, False), ("system_omitted", msgs, True),
                     ("system_omitted_prompt", msgs[:-1], True)]
        for kind, m, gen in cases:
            text = tok.apply_chat_template(m, tokenize=False, add_generation_prompt=gen)
            ids = chat_ids(tok, m, gen)
            variants.append({"kind": kind, "messages": m, "add_generation_prompt": gen, "text": text, "ids": ids,
                             "equals_tokenize_text_without_special_tokens": ids == enc(tok, text, False),
                             "equals_tokenize_text_with_special_tokens": ids == enc(tok, text, True)})
        out[name] = variants
    return out


def probe_section(tok, folder: Path):
    raw = None
    if (folder / "tokenizer.json").exists():
        from tokenizers import Tokenizer
        tk = Tokenizer.from_file(str(folder / "tokenizer.json"))
        raw = ("tokenizers", lambda t, s: tk.encode(t, add_special_tokens=s).ids)
    else:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
        raw = ("sentencepiece", lambda t, s: ([sp.bos_id()] if s else []) + sp.encode(t))
    probes, mismatches = [], 0
    for text in PROBES:
        ids = enc(tok, text, True)
        ids_ns = enc(tok, text, False)
        r_ns = raw[1](text, False)
        r = raw[1](text, True)
        same = (ids == r) and (ids_ns == r_ns)
        mismatches += 0 if same else 1
        probes.append({"text": text, "ids": ids, "ids_no_special": ids_ns,
                       "tokens": tok.convert_ids_to_tokens(ids_ns), "decoded": tok.decode(ids_ns),
                       f"{raw[0]}_ids": r, f"{raw[0]}_ids_no_special": r_ns, "backend_agrees": same})
    return probes, raw[0], mismatches


def select_prompts(model, tok, family, candidates, window):
    """Among the candidates of each category, keep the one whose 24 greedy steps have the largest smallest margin."""
    chosen = []
    for cat, cands in candidates.items():
        best = None
        for text, ids in cands:
            if cat == "long" and window and len(ids) <= 2 * window:
                continue
            gen, margins, _ = greedy(model, ids)
            score = min(margins)
            if best is None or score > best[0]:
                best = (score, text, ids)
        if best is None:
            text, ids = cands[0]
            best = (min(greedy(model, ids)[1]), text, ids)
        log(f"   {cat}: min margin {best[0]:.3f} over {len(cands)} candidates ({len(best[2])} ids)")
        chosen.append((cat, best[1], best[2]))
    return chosen


def prompt_candidates(tok, corpus, family, chat_fn):
    c = {"chat": [], "plain": [], "long": []}
    for row in corpus.train_rows[:8]:
        msgs = chat_fn(row["messages"])
        first_user = next(i for i, m in enumerate(msgs) if m["role"] == "user")
        pm = msgs[:first_user + 1]
        c["chat"].append((json.dumps(pm, ensure_ascii=False), chat_ids(tok, pm, True)))
    for p in corpus.paragraphs[:10]:
        words = p.split()
        t = " ".join(words[:10])
        c["plain"].append((t, enc(tok, t, True)))
        t = " ".join(words[:60])
        c["long"].append((t, enc(tok, t, True)))
    # plain text the model saw inside chats: the first words of assistant answers, without the template
    for row in corpus.train_rows[:5]:
        ans = next(m["content"] for m in row["messages"] if m["role"] == "assistant")
        t = " ".join(ans.split()[:5])
        c["plain"].append((t, enc(tok, t, True)))
    return c


def family_chat_fn(family):
    if family in ("gemma", "gemma2"):
        # Gemma's template refuses a system role: training drops it (the user turns carry the questions).
        return lambda msgs: [m for m in msgs if m["role"] != "system"]
    return lambda msgs: list(msgs)


def run_family(family, args, corpus, root: Path, shared):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig
    notes = []
    folder = root / "tests" / "fixtures" / "families" / family
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    log(f"=== {family}")

    # 1. tokenizer
    if family in ("llama3", "bitnet"):
        tinfo = build_llama3_tokenizer(corpus, folder)
    elif family == "qwen2":
        tinfo = build_qwen2_tokenizer(corpus, folder)
    elif family == "mistral":
        tinfo = build_mistral_tokenizer(corpus, folder)
    else:
        tinfo = build_gemma_tokenizer(corpus, folder)
    tok_files = {p.name: sha256_bytes(p.read_bytes()) for p in folder.iterdir()}
    log(f"   tokenizer {tinfo.get('vocab_size')} ids; files {sorted(tok_files)}")
    tok, tok_class = load_hf_tokenizer(folder, notes)

    # 2. config
    V = tinfo["vocab_size"]
    common = dict(vocab_size=V, hidden_size=128, max_position_embeddings=512, initializer_range=0.02)
    if family == "llama3":
        from transformers import LlamaConfig as C, LlamaForCausalLM as M
        kw = dict(common, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=32, hidden_act="silu", rms_norm_eps=1e-5, tie_word_embeddings=True,
                  bos_token_id=tinfo["bos"], eos_token_id=tinfo["eos_list"], pad_token_id=None,
                  attention_bias=False, mlp_bias=False,
                  rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 64})
        window, lr = None, 2e-3
    elif family == "mistral":
        from transformers import MistralConfig as C, MistralForCausalLM as M
        kw = dict(common, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=32, hidden_act="silu", rms_norm_eps=1e-5, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2, pad_token_id=None, sliding_window=16,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
        window, lr = 16, 2e-3
    elif family == "qwen2":
        from transformers import Qwen2Config as C, Qwen2ForCausalLM as M
        kw = dict(common, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  hidden_act="silu", rms_norm_eps=1e-6, tie_word_embeddings=True,
                  bos_token_id=tinfo["endoftext"], eos_token_id=tinfo["im_end"], use_sliding_window=False,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
        window, lr = None, 2e-3
    elif family == "gemma":
        from transformers import GemmaConfig as C, GemmaForCausalLM as M
        kw = dict(common, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                  head_dim=48, hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6, tie_word_embeddings=True,
                  pad_token_id=0, eos_token_id=1, bos_token_id=2,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
        window, lr = None, 2e-3
    elif family == "gemma2":
        from transformers import Gemma2Config as C, Gemma2ForCausalLM as M
        kw = dict(common, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=48, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, tie_word_embeddings=True,
                  pad_token_id=0, eos_token_id=1, bos_token_id=2, query_pre_attn_scalar=64, sliding_window=16,
                  layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                  final_logit_softcapping=5.0, attn_logit_softcapping=5.0,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
        window, lr = 16, 2e-3
    else:
        from transformers import BitNetConfig as C, BitNetForCausalLM as M
        kw = dict(common, intermediate_size=320, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                  hidden_act="relu2", rms_norm_eps=1e-5, tie_word_embeddings=True,
                  bos_token_id=tinfo["bos"], eos_token_id=tinfo["ids"]["<|end_of_text|>"], pad_token_id=None,
                  rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
        window, lr = None, 3e-3
    cfg = make_config(C, kw, notes)
    model = new_model(M, cfg, SEED)
    log(f"   {M.__name__}: {sum(p.numel() for p in model.parameters())} parameters")

    # 3. data and training
    chat_fn = family_chat_fn(family)
    def render_all(rows):
        texts, refused = [], 0
        for r in rows:
            try:
                texts.append(tok.apply_chat_template(chat_fn(r["messages"]), tokenize=False))
            except Exception:
                refused += 1
        if refused:
            notes.append(f"{refused} chats refused by the template were left out")
        return texts
    chat_texts = render_all(corpus.train_rows)
    val_texts = render_all(corpus.val_rows)
    eos_for_plain = {"llama3": tinfo.get("ids", {}).get("<|end_of_text|>"), "bitnet": tinfo.get("ids", {}).get(
        "<|end_of_text|>"), "qwen2": tinfo.get("endoftext"), "mistral": 2, "gemma": 1, "gemma2": 1}[family]
    stream = token_stream(tok, chat_texts, corpus.plain, eos_for_plain, bos_plain=True)
    val_stream = []
    for t in val_texts:
        val_stream.extend(enc(tok, t, add_special_tokens=False))
    log(f"   training stream {len(stream)} tokens; held-out {len(val_stream)} tokens")
    try:
        n_tok = len(tok)
    except Exception:
        n_tok = None
    top = max(max(stream), max(val_stream))
    if top >= V or (n_tok is not None and n_tok > V):
        raise RuntimeError(f"token ids reach {top} / tokenizer has {n_tok} entries but the model vocab is {V}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    swapped = None
    if family == "bitnet":
        swapped = swap_linears(model, make_ternary_linear_cls())
        notes.append(f"QAT: {len(swapped)} linears trained with ternary weights and int8 activations (STE)")
    train = train_loop(model, stream, args.steps, lr, device, SEED, val=val_stream)
    log(f"   trained: loss {train['first_loss']:.3f} -> {train['last_loss']:.3f}, "
        f"held-out {train['heldout_loss_fp32_training_weights']}")
    model.to("cpu")

    # 4. save
    extra = {}
    if family == "bitnet":
        extra = save_bitnet(model, cfg, swapped, folder, notes)
    else:
        model.to(torch.bfloat16)
        model.save_pretrained(str(folder))
    if family == "llama3":
        GenerationConfig(bos_token_id=tinfo["bos"], eos_token_id=tinfo["eos_list"], do_sample=True,
                         temperature=0.6, top_p=0.9).save_pretrained(str(folder))
    elif family == "qwen2":
        GenerationConfig(bos_token_id=tinfo["endoftext"], pad_token_id=tinfo["endoftext"], do_sample=True,
                         eos_token_id=[tinfo["im_end"], tinfo["endoftext"]], repetition_penalty=1.05,
                         temperature=0.7, top_p=0.8, top_k=20).save_pretrained(str(folder))
    del model

    # 5. reload in fp32, eager, CPU
    if family == "bitnet":
        ref_model, extra2 = load_bitnet_checked(folder, cfg, swapped, tok, notes)
        extra.update(extra2)
    else:
        ref_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                         attn_implementation="eager").eval()
    from safetensors import safe_open
    keys = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as sf:
            for k in sf.keys():
                t = sf.get_slice(k)
                keys[k] = [t.get_dtype(), list(t.get_shape())]
    try:
        tied = ref_model.lm_head.weight.data_ptr() == ref_model.model.embed_tokens.weight.data_ptr()
    except Exception:
        tied = None
    config_json = json.loads((folder / "config.json").read_text())
    log(f"   config.json: {json.dumps(config_json, sort_keys=True)}")

    # 6. references
    ref = {
        "about": f"Hugging Face transformers reference outputs for the tiny {family} fixture (float32 compute on the "
                 f"stored weights, eager attention, CPU). See README.md.",
        "family": family,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": __import__("tokenizers").__version__,
        "sentencepiece": __import__("sentencepiece").__version__,
        "tokenizer_class": tok_class,
        "model_class": type(ref_model).__name__,
        "lm_head_tied_to_embeddings": tied,
        "safetensors": keys,
        "corpus_sha256": corpus.digest(),
        "training": train,
        "notes": notes,
    }
    probes, backend, mism = probe_section(tok, folder)
    ref["probes_backend"] = backend
    ref["probes_backend_mismatches"] = mism
    ref["probes"] = probes
    log(f"   probes: {len(probes)}; transformers vs raw {backend}: {mism} differ")
    ref["chat"] = chat_section(tok, family)
    cands = prompt_candidates(tok, corpus, family, chat_fn)
    chosen = select_prompts(ref_model, tok, family, cands, window)
    ref["logits"] = [logits_case(ref_model, tok, ids, cat, text) for cat, text, ids in chosen]
    ref["greedy_min_margin"] = min(c["greedy_24"]["min_margin"] for c in ref["logits"])
    ids512 = val_stream[:512]
    ref["heldout"] = {"source": "datasets/sales/validation.jsonl rendered with the chat template, concatenated, "
                                "tokenized without added special tokens; first 512 ids",
                      "ids": ids512, "mean_loss_fp32": heldout(ref_model, ids512)}
    ref["rope_inv_freq"] = rope_buffers(ref_model)
    if window:
        try:
            from transformers.masking_utils import sliding_window_causal_mask_function as swf
            f = swf(window)
            import torch as T
            q = 20
            row = [kv for kv in range(q + 1) if bool(f(T.tensor(0), T.tensor(0), T.tensor(q), T.tensor(kv)))]
            ref["sliding_window_mask_row_q20"] = row
        except Exception as e:
            ref["sliding_window_mask_row_q20"] = f"unavailable: {e!r}"
    if family == "gemma2":
        ref["softcap_check"] = softcap_check(ref_model, ref["logits"][0]["input_ids"])
    ref.update(extra)
    gc_path = folder / "generation_config.json"
    ref["generation_config"] = json.loads(gc_path.read_text()) if gc_path.exists() else None
    dump_json(ref, folder / "reference.json")
    write_family_readme(family, folder, ref, config_json, tinfo)
    log(f"   heldout loss {ref['heldout']['mean_loss_fp32']:.4f}; min greedy margin {ref['greedy_min_margin']:.3f}")
    shared[family] = {"folder": folder, "tok": tok, "model": ref_model}
    size = sum(p.stat().st_size for p in folder.iterdir())
    log(f"   {family}: {size / 1e6:.2f} MB")
    return ref


def softcap_check(model, ids):
    """Final-logit soft-capping must be active: the uncapped head output exceeds the cap somewhere."""
    import torch
    with torch.no_grad():
        x = torch.tensor([ids], device=mdev(model))
        h = model.model(input_ids=x).last_hidden_state
        raw = model.lm_head(h)[0].float()
        cap = model.config.final_logit_softcapping
        capped = torch.tanh(raw / cap) * cap
        lg = model(input_ids=x).logits[0].float()
        return {"max_abs_uncapped_logit": float(raw.abs().max()), "cap": cap,
                "max_abs_diff_vs_manual_cap": float((capped - lg).abs().max())}


def save_bitnet(model, cfg, swapped, folder: Path, notes):
    import torch
    from safetensors.torch import save_file
    tensors = {}
    packed_info = {}
    for name, p in model.state_dict().items():
        if name.endswith(".weight") and name[:-len(".weight")] in swapped:
            continue
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        tensors[name] = p.detach().to(torch.bfloat16).contiguous()
    for name, lin in swapped.items():
        t, s = ternarize(lin.weight.detach().cpu())
        t8 = t.to(torch.int8)
        packed = pack_ternary(t8)
        assert torch.equal(unpack_ternary(packed), t8)
        scale_bf16 = s.to(torch.bfloat16).reshape(1)
        tensors[f"{name}.weight"] = packed
        tensors[f"{name}.weight_scale"] = scale_bf16
        lin.tern = t8.float()
        lin.scale = scale_bf16.float()
        packed_info[name] = {"zeros_fraction": float((t8 == 0).float().mean()), "scale": float(scale_bf16)}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    try:
        from transformers.integrations.bitnet import unpack_weights
        k = next(iter(swapped))
        theirs = unpack_weights(tensors[f"{k}.weight"].clone(), dtype=torch.float32)
        ok = torch.equal(theirs, swapped[k].tern)
        notes.append(f"transformers.integrations.bitnet.unpack_weights reproduces our ternary matrix: {ok}")
    except Exception as e:
        notes.append(f"unpack_weights check unavailable: {e!r}")
    # the three keys microsoft/bitnet-b1.58-2B-4T ships
    qc = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}
    cfg.architectures = ["BitNetForCausalLM"]
    try:
        cfg.dtype = torch.bfloat16
    except Exception as e:
        notes.append(f"config.dtype not settable: {e!r}")
    try:
        cfg.quantization_config = qc
        cfg.save_pretrained(str(folder))
    except Exception as e:
        notes.append(f"quantization_config added to config.json after save_pretrained ({e!r})")
        cfg.save_pretrained(str(folder))
    written = json.loads((folder / "config.json").read_text())
    if written.get("quantization_config") != qc:
        written["quantization_config"] = qc
        (folder / "config.json").write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
        notes.append("quantization_config written into config.json by hand")
    from transformers import GenerationConfig
    GenerationConfig.from_model_config(cfg).save_pretrained(str(folder))
    return {"bitnet_packing": packed_info}


def load_bitnet_checked(folder: Path, cfg, swapped, tok, notes):
    """Load the packed checkpoint with BitNetForCausalLM.from_pretrained and check it against our own forward over
    the same ternary weights (embeddings/norms as stored). If the autobitlinear layout does not reload identically,
    try transformers' other linear class (bitlinear: weight_scale is the reciprocal there)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import BitNetForCausalLM
    stored = load_file(str(folder / "model.safetensors"))
    result = {"bitnet_reload_attempts": []}
    probe_ids = enc(tok, "The Beacon 300 headlamp is SKU KR-HL-300. Ridge Club membership is free.", True)

    def ours(mode):
        m = new_model(BitNetForCausalLM, type(cfg).from_dict({k: v for k, v in cfg.to_dict().items()
                                                              if k != "quantization_config"}), SEED)
        sw = swap_linears(m, make_ternary_linear_cls())
        sd = {k: v.float() for k, v in stored.items() if not k.endswith(("_proj.weight", "weight_scale"))}
        missing, unexpected = m.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith("_proj.weight") and k != "lm_head.weight"]
        assert not missing and not unexpected, (missing, unexpected)
        for name, lin in sw.items():
            lin.tern = unpack_ternary(stored[f"{name}.weight"]).float()
            lin.scale = stored[f"{name}.weight_scale"].float()  # bitlinear: already the reciprocal
            lin.mode = mode
        if cfg.tie_word_embeddings:
            m.lm_head.weight = m.model.embed_tokens.weight
        return m.float().eval()

    for linear_class in ("autobitlinear", "bitlinear"):
        attempt = {"linear_class": linear_class}
        try:
            if linear_class == "bitlinear":
                qc = json.loads((folder / "config.json").read_text())
                qc["quantization_config"]["linear_class"] = "bitlinear"
                (folder / "config.json").write_text(json.dumps(qc, indent=2) + "\n")
                st = dict(stored)
                for name in swapped:
                    st[f"{name}.weight_scale"] = (1.0 / stored[f"{name}.weight_scale"].float()).to(torch.bfloat16)
                save_file(st, str(folder / "model.safetensors"), metadata={"format": "pt"})
                stored = st
            mine = ours(linear_class)
            model = None
            for opts in ({}, {"device_map": "cpu"}, {"device_map": "cuda"}):
                try:
                    model = BitNetForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                              attn_implementation="eager", **opts).eval()
                    attempt["load_options"] = str(opts)
                    break
                except Exception as e:
                    attempt.setdefault("load_errors", []).append(f"{opts}: {e!r}")
            if model is None:
                raise RuntimeError("no load option worked")
            dev = next(model.parameters()).device
            attempt["device"] = str(dev)
            q = model.model.layers[0].self_attn.q_proj
            attempt["loaded_linear_class"] = type(q).__name__
            try:
                attempt["quantization_config_as_transformers_resaves_it"] = model.config.to_dict().get(
                    "quantization_config")
            except Exception as e:
                attempt["quantization_config_as_transformers_resaves_it"] = repr(e)
            with torch.no_grad():
                a = model(input_ids=torch.tensor([probe_ids], device=dev)).logits[0].float().cpu()
                b = mine.to(dev)(input_ids=torch.tensor([probe_ids], device=dev)).logits[0].float().cpu()
            mine.to("cpu")
            diff = float((a - b).abs().max())
            attempt["max_abs_logit_diff_vs_own_forward"] = diff
            attempt["ok"] = diff < 1e-3
            log(f"   bitnet reload as {linear_class}: {attempt}")
            result["bitnet_reload_attempts"].append(attempt)
            if attempt["ok"]:
                result["bitnet_linear_class"] = linear_class
                if dev.type != "cpu":
                    notes.append(f"BitNet references computed on {dev} (the CPU load path failed)")
                return model, result
        except Exception as e:
            attempt["error"] = repr(e)
            traceback.print_exc()
            result["bitnet_reload_attempts"].append(attempt)
            log(f"   bitnet reload as {linear_class} failed: {e!r}")
    raise RuntimeError(f"BitNet packed checkpoint did not reload identically: {result}")


# --------------------------------------------------------------------------------------------------------------
# README per family
# --------------------------------------------------------------------------------------------------------------

FAMILY_TEXT = {
    "llama3": ("LlamaForCausalLM in Llama 3.2 style: `llama3` RoPE frequency scaling, GQA, tied head, a list of "
               "end-of-sequence ids", "Meta-Llama-3-8B-Instruct's chat template"),
    "mistral": ("MistralForCausalLM (v0.1 style) with sliding-window attention (window 16, shorter than the long "
                "prompt), untied head", "Mistral-7B-Instruct-v0.1's chat template (current revision)"),
    "qwen2": ("Qwen2ForCausalLM (Qwen2.5 style): biases on q/k/v (trained, non-zero), tied embeddings, "
              "rope_theta 1e6", "Qwen2.5-Instruct's ChatML template (with its default system prompt)"),
    "gemma": ("GemmaForCausalLM: GeGLU with tanh-approximate GELU, RMSNorm (1 + w), embeddings scaled by "
              "sqrt(hidden), head_dim 48 != hidden/heads 32, multi-query attention, tied head",
              "Gemma's chat template (raises on a system role)"),
    "gemma2": ("Gemma2ForCausalLM: attention-logit and final-logit soft-capping (5.0 each), query_pre_attn_scalar "
               "64 != head_dim 48, sliding window 16 on layers 0 and 2 (layer_types), pre/post norms around "
               "attention and MLP, tied head", "Gemma's chat template (raises on a system role)"),
    "bitnet": ("BitNetForCausalLM (BitNet b1.58): packed ternary weights with a per-matrix weight_scale, 8-bit "
               "per-token activation quantization inside every linear, ReLU^2 MLP, attn_sub_norm and ffn_sub_norm, "
               "tied head", "Llama 3's tokenizer and chat template (as the real BitNet-2B uses Llama 3's tokenizer)"),
}


FAMILY_QUIRKS = {
    "llama3": [
        "config.json carries RoPE only as `rope_parameters` (`rope_type: llama3`, `factor`, `low_freq_factor`, "
        "`high_freq_factor`, `original_max_position_embeddings`, `rope_theta`): no top-level `rope_theta` and no "
        "`rope_scaling` (hub Llama 3.x files use `rope_scaling` + `rope_theta`; a loader must take both). With "
        "head_dim 32, theta 5e5, factor 8, original 64: inverse frequencies 0-1 are kept (wavelength < 16), 2 is "
        "smoothed, 3-15 are divided by 8 (`rope_inv_freq`).",
        "`eos_token_id` is a list [<|end_of_text|>, <|eom_id|>, <|eot_id|>]; `generation_config.json` repeats it and "
        "asks for sampling (temperature 0.6, top_p 0.9): the greedy references ignore it.",
        "`tokenizer_class: PreTrainedTokenizerFast` loads as `TokenizersBackend`, which uses `tokenizer.json` as "
        "is (BOS from the TemplateProcessing post-processor, `ignore_merges: true`, merges as \"a b\" strings). "
        "`clean_up_tokenization_spaces: true` is ignored by transformers 5.17 for BPE (it warns): decode does no "
        "clean-up.",
        "The chat template writes `bos_token` itself: `apply_chat_template` ids equal `tokenizer(text, "
        "add_special_tokens=False)`; `tokenizer(text)` would add a second BOS.",
    ],
    "mistral": [
        "`sliding_window: 16` at the top level, no `layer_types`: every layer is windowed. transformers' mask lets "
        "query q attend keys q-15..q (the window counts the query itself): `sliding_window_mask_row_q20`.",
        "Untied head (`lm_head.weight` stored); RoPE as `rope_parameters` (default, theta 10000).",
        "transformers 5.17's `LlamaTokenizer` does not run SentencePiece: it rebuilds a `tokenizers` BPE from "
        "`tokenizer.model` with a Metaspace pre-tokenizer (`legacy: true` -> prepend_scheme \"always\", split "
        "off), which prepends \"\u2581\" only when the text does not already start with a space. SentencePiece's "
        "dummy prefix always adds one, so texts that start with spaces differ (\" \", \" Hello world\", \"   leading "
        "...\"); special-token strings written in the text (\"</s>\", \"<s>\", \"<unk>\") become their ids in "
        "transformers but are spelled out by SentencePiece. Both are recorded (`ids*` vs `sentencepiece_ids*`).",
        "The template (current v0.1/v0.2 revision) renders \"<s> [INST] ... [/INST]\" with a space after <s>, "
        "folds a system message into the first user turn with \"\\n\\n\", ends assistant turns with \"</s>\", "
        "and ignores `add_generation_prompt` (the prompt already ends with [/INST]).",
    ],
    "qwen2": [
        "Biases on q/k/v (`*_proj.bias` stored, non-zero after training), none on o_proj; tied embeddings; "
        "`rope_parameters` theta 1e6.",
        "config.json also writes `layer_types` (all full_attention), `use_sliding_window: false`, "
        "`sliding_window: null`, `max_window_layers: 28`; `bos_token_id` is <|endoftext|> although the tokenizer "
        "never adds a BOS; `eos_token_id` is <|im_end|>; `generation_config.json` (as Qwen2.5-Instruct) has "
        "eos [<|im_end|>, <|endoftext|>], repetition_penalty 1.05, top_k 20, top_p 0.8, temperature 0.7.",
        "`Qwen2Tokenizer` in 5.17 builds its pipeline in code (NFC, the Split regex with single digits, ByteLevel "
        "without prefix space, BPE without ignore_merges) and takes only vocab/merges from `tokenizer.json`; "
        "it agrees with the raw `tokenizer.json` on every probe. Merges are stored as [a, b] pairs. "
        "<tool_call>/</tool_call> are added tokens that are not special.",
        "The template inserts Qwen's default system prompt when the messages have none.",
    ],
    "gemma": [
        "5.17's GemmaConfig field is `hidden_act` (\"gelu_pytorch_tanh\"); Gemma 2 uses `hidden_activation`. "
        "head_dim 48 with hidden 128 / 4 heads; one key/value head.",
        "`GemmaTokenizer` (a `tokenizers` BPE rebuilt from `tokenizer.model`: Replace(\" \", \"\u2581\") "
        "normalizer, byte fallback, no prefix) always has a mask token: the SentencePiece model holds <mask> at id 4 "
        "(control), <start_of_turn>=5 and <end_of_turn>=6 (user-defined). Without <mask> in the model transformers "
        "appends it as id 1024, beyond the embedding.",
        "Special-token strings written in the text (\"<bos><eos><pad>\", \"<unk>\") become their ids in "
        "transformers but are spelled out by SentencePiece (`probes_backend_mismatches`).",
        "The template raises `TemplateError: System role not supported` on a system message "
        "(`chat.with_system[0]`); the training chats dropped the system message.",
    ],
    "gemma2": [
        "config.json: `layer_types` [sliding_attention, full_attention, sliding_attention, full_attention] with "
        "`sliding_window: 16` (no `sliding_window_pattern`), `query_pre_attn_scalar: 64` (scores scaled by 64^-0.5, "
        "not head_dim^-0.5), `attn_logit_softcapping: 5.0` (tanh(s/5)*5 on attention scores before the mask), "
        "`final_logit_softcapping: 5.0` (on the logits), `hidden_activation`.",
        "`softcap_check`: the head's uncapped logits reach ~43, so capping changes every output.",
        "Tokenizer and template as the gemma fixture.",
    ],
    "bitnet": [
        "`quantization_config` is the three keys the real bitnet-b1.58-2B-4T ships; transformers 5.17 re-saves it "
        "with all fields (`modules_to_not_convert: null`, `use_rms_norm: false`, `rms_norm_eps: 1e-06`), see "
        "`bitnet_reload_attempts`.",
        "Loaded with `from_pretrained(dtype=float32)` the linears become `AutoBitLinear` (weight unpacked into fp32 "
        "ternary values at load, `weight_scale` fp32) and the logits equal our own forward over the unpacked "
        "weights exactly (max difference 0.0, CPU).",
        "Tokenizer and chat template: the llama3 fixture's (identical files); eos is <|end_of_text|> only.",
    ],
}


def write_family_readme(family, folder: Path, ref, config_json, tinfo):
    arch, chat = FAMILY_TEXT[family]
    files = sorted(p.name for p in folder.iterdir() if p.name != "README.md") + ["README.md"]
    tok_file = "tokenizer.json" if (folder / "tokenizer.json").exists() else "tokenizer.model"
    lines = [
        f"# {family}: a tiny trained {config_json.get('architectures', ['?'])[0]} fixture",
        "",
        f"{arch}. Tokenizer: `{tok_file}` trained in the family's own style on this repository's text; "
        f"chat template: {chat}. Made by `scripts/gpu/make_family_fixtures.py` on the GPU machine (see "
        "`scripts/gpu/README.md`); random init (seed 1234), then "
        f"{ref['training']['steps']} AdamW steps in fp32 (batch {ref['training']['batch']} x "
        f"{ref['training']['seq']} tokens, lr {ref['training']['lr']}) on the sales chats rendered with the chat "
        f"template plus README/docs/configs/C# sources; training loss {ref['training']['first_loss']:.2f} -> "
        f"{ref['training']['last_loss']:.2f}.",
        "",
        "| | |",
        "|---|---|",
        f"| files | {', '.join('`' + f + '`' for f in files)} |",
        f"| config | `model_type` {config_json.get('model_type')}, vocab {config_json.get('vocab_size')}, hidden "
        f"{config_json.get('hidden_size')}, layers {config_json.get('num_hidden_layers')}, heads "
        f"{config_json.get('num_attention_heads')} (kv {config_json.get('num_key_value_heads')}), head_dim "
        f"{config_json.get('head_dim', 'derived')}, intermediate {config_json.get('intermediate_size')} |",
        f"| weights | {len(ref['safetensors'])} tensors in `model.safetensors`; lm_head tied to the embeddings: "
        f"{ref['lm_head_tied_to_embeddings']} |",
        f"| transformers | {ref['transformers']} (torch {ref['torch']}, tokenizers {ref['tokenizers']}, "
        f"sentencepiece {ref['sentencepiece']}); tokenizer class `{ref['tokenizer_class']}` |",
        f"| held-out loss | {ref['heldout']['mean_loss_fp32']:.4f} (fp32, 512 ids) |",
        f"| smallest greedy margin | {ref['greedy_min_margin']:.3f} (top1 - top2 logit over the 3 x 24 steps) |",
        "",
        "## config.json as transformers writes it",
        "",
        "```json",
        json.dumps(config_json, indent=2),
        "```",
        "",
        "## reference.json",
        "",
        "Outputs of transformers on these exact stored weights, loaded with `dtype=torch.float32`, "
        "`attn_implementation=\"eager\"`, on the CPU (fp32 throughout):",
        "- `probes[]`: for each probe string `text`: `ids` = `tokenizer(text)[\"input_ids\"]` (the family's default "
        "special tokens), `ids_no_special` (`add_special_tokens=False`), `tokens` (pieces of the latter), `decoded` "
        "(`tokenizer.decode(ids_no_special)`), and the raw backend's ids for the same text (`tokenizers_ids*` from "
        "`tokenizers.Tokenizer.from_file`, or `sentencepiece_ids*` from `SentencePieceProcessor.encode` with the "
        "BOS id prepended when special tokens are on) with `backend_agrees`. `probes_backend_mismatches` counts "
        "probes where transformers and the raw backend differ: where they do, transformers is the reference.",
        "- `chat.<conversation>[]`: `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` as "
        "`text` and the ids of `apply_chat_template(..., tokenize=True)` as `ids`; kinds: `full` (all messages, "
        "generation prompt off and on) and `prompt` (all but the last assistant message, generation prompt on). "
        "`equals_tokenize_text_without_special_tokens` says whether those ids are `tokenizer(text, "
        "add_special_tokens=False)` (transformers renders with Jinja `trim_blocks` and `lstrip_blocks`).",
        "- `logits[]`: three prompts (`chat`: a training question rendered with the generation prompt; `plain`: "
        "the start of a README paragraph or of a sales answer, without template; `long`: 60 README words, longer "
        "than any sliding window): `input_ids`, the full "
        "`last_logits` (fp32, vocab-sized), `top5_ids`/`top5_logits`, `position_logit_sums` and `position_argmax` "
        "(every position), and `greedy_24`: 24 argmax steps by full recompute without stopping at EOS (`ids`, "
        "`text`, the top1 - top2 `margins` per step). Each prompt was chosen among 8-15 candidates for the "
        "largest smallest margin. `generate_check` is transformers' `generate` (KV cache) on the same prompt.",
        "- `heldout`: 512 ids of held-out text (the validation chats rendered with the template) and the mean "
        "next-token cross-entropy over 511 predictions.",
        "- `rope_inv_freq`: the model's RoPE inverse frequencies after any scaling; `generation_config`: "
        "`generation_config.json`; `safetensors`: tensor names, dtypes and shapes.",
    ]
    if "sliding_window_mask_row_q20" in ref:
        lines.append(f"- `sliding_window_mask_row_q20`: the key positions query 20 attends to in a sliding layer "
                     f"(transformers' mask function): {ref['sliding_window_mask_row_q20']}.")
    if family == "gemma2":
        lines.append("- `softcap_check`: the largest uncapped logit (proves final soft-capping is active) and the "
                     "difference between `tanh(raw / cap) * cap` and the model's logits.")
    if family == "bitnet":
        lines += [
            "",
            "## Packed ternary layout",
            "",
            f"Each of q/k/v/o/gate/up/down_proj is stored as `weight`: uint8 `[out/4, in]` and `weight_scale`: "
            f"bfloat16 `[1]`; `quantization_config` = `{json.dumps(config_json.get('quantization_config'))}`. "
            "Byte row r, bits 2k..2k+1 (k = 0..3, least significant first) hold ternary value + 1 (0, 1, 2 for "
            "-1, 0, +1) of output row k*out/4 + r, i.e. the four values of a byte come from four blocks of out/4 "
            "rows. With `linear_class: autobitlinear` (what the real bitnet-b1.58-2B-4T uses) y = "
            "(ActQuant(x) @ W_t^T) * weight_scale, so weight_scale = mean|W| (the absmean); with `bitlinear` y = "
            "(round(x*s) @ W_t^T) / (s * weight_scale), i.e. weight_scale = 1/mean|W|. ActQuant: s = 127 / "
            "max(|x|) per token (clamped at 1e-5), x_q = clamp(round(x*s), -128, 127) / s. Embeddings and norms are "
            "bfloat16; lm_head is tied.",
            f"- `bitnet_linear_class`: the class that reloaded identically; `bitnet_reload_attempts`: the checks "
            "(transformers' from_pretrained vs our own forward over the unpacked weights); `bitnet_packing`: per "
            "matrix zero fraction and scale.",
        ]
    lines += ["", "## Quirks (transformers 5.17)", ""] + [f"- {q}" for q in FAMILY_QUIRKS[family]]
    lines += ["", "Licence: the weights and tokenizer were trained for this project's tests on its own text."]
    (folder / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness log-likelihoods
# --------------------------------------------------------------------------------------------------------------

def harness_encode_pair(tok, context, continuation, add_special_tokens):
    """lm_eval TemplateLM._encode_pair (causal): trailing spaces of the context move to the continuation; whole =
    encode(context + continuation); continuation_enc = whole[len(encode(context)):]. add_special_tokens None =
    the tokenizer's default (HFLM since v0.4.9.2, add_bos_token=None); False = older HFLM."""
    n = len(context) - len(context.rstrip())
    if n > 0:
        continuation = context[-n:] + continuation
        context = context[:-n]
    kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    whole = [int(x) for x in tok(context + continuation, **kw)["input_ids"]]
    ctx = [int(x) for x in tok(context, **kw)["input_ids"]]
    return ctx, whole[len(ctx):], n


def harness_score(model, ctx, cont, max_length):
    import torch
    inp = (ctx + cont)[-(max_length + 1):][:-1]
    with torch.no_grad():
        lg = model(input_ids=torch.tensor([inp], device=mdev(model))).logits[0].float().cpu()
    lp = torch.log_softmax(lg[len(inp) - len(cont):], dim=-1)
    tgt = torch.tensor(cont)
    tok_lp = lp.gather(1, tgt[:, None])[:, 0]
    greedy = bool((lp.argmax(-1) == tgt).all())
    return float(tok_lp.sum()), [float(x) for x in tok_lp.tolist()], greedy


def loglik_reference(args, root: Path, shared):
    import torch
    from transformers import AutoModelForCausalLM
    models = {}
    notes = []
    sotu = Path(args.repo) / "models" / "tiny-llama-sotu"
    tok, cls = load_hf_tokenizer(sotu, notes)
    m = AutoModelForCausalLM.from_pretrained(str(sotu), dtype=torch.float32, attn_implementation="eager").eval()
    models["tiny-llama-sotu"] = ("models/tiny-llama-sotu", tok, cls, m)
    if "llama3" in shared:
        s = shared["llama3"]
        models["llama3"] = ("tests/fixtures/families/llama3", s["tok"], type(s["tok"]).__name__, s["model"])
    # keep the first 20 candidates whose continuation encoding is non-empty everywhere
    pairs = []
    for ctx, cont in LOGLIK_CANDIDATES:
        ok = True
        for _, (path, tk, _, _) in models.items():
            for mode in (None, False):
                c, k, _ = harness_encode_pair(tk, ctx, cont, mode)
                ok &= len(k) > 0 and len(c) > 0
        if ok:
            pairs.append((ctx, cont))
        else:
            notes.append(f"skipped {ctx!r} + {cont!r}: empty context or continuation encoding")
        if len(pairs) == 20:
            break
    out = {
        "about": "lm-evaluation-harness HFLM log-likelihoods computed with transformers (float32, eager, CPU).",
        "harness_rule": "TemplateLM._encode_pair at lm-evaluation-harness 4e7e0d47 (Aug 2026): trailing whitespace of "
                        "the context moves to the front of the continuation; whole = tok_encode(context + "
                        "continuation); context_enc = tok_encode(context); continuation_enc = "
                        "whole[len(context_enc):]. tok_encode uses the tokenizer's default special tokens "
                        "(add_bos_token=None, the default since v0.4.9.2: BOS added for Llama tokenizers); "
                        "`no_special_tokens` repeats everything with add_special_tokens=False (older HFLM). "
                        "Scoring: input = (context_enc + continuation_enc)[-(max_length+1):][:-1], log_softmax of "
                        "the last len(continuation_enc) positions, summed at the continuation ids; is_greedy = "
                        "every continuation id is the argmax.",
        "notes": notes,
        "models": {},
    }
    def raw_encoder(path):
        folder = Path(args.repo) / path if path.startswith("models/") else root / path
        if (folder / "tokenizer.json").exists():
            from tokenizers import Tokenizer
            t = Tokenizer.from_file(str(folder / "tokenizer.json"))
            return lambda s, special: t.encode(s, add_special_tokens=special).ids
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
        return lambda s, special: ([sp.bos_id()] if special else []) + sp.encode(s)

    for name, (path, tk, cls, model) in models.items():
        max_len = model.config.max_position_embeddings
        raw = raw_encoder(path)
        rows = []
        for ctx, cont in pairs:
            row = {"context": ctx, "continuation": cont}
            for key, mode in (("default", None), ("no_special_tokens", False)):
                c, k, moved = harness_encode_pair(tk, ctx, cont, mode)
                lp, toks, g = harness_score(model, c, k, max_len)
                special = mode is None
                c2, w2 = ctx[:len(ctx) - moved], ctx + cont
                agrees = raw(c2, special) == c and raw(w2, special)[len(c):] == k
                row[key] = {"context_enc": c, "continuation_enc": k, "logprob": lp, "token_logprobs": toks,
                            "is_greedy": g, "raw_backend_agrees": agrees}
            row["moved_spaces"] = moved
            rows.append(row)
        out["models"][name] = {"path": path, "tokenizer_class": cls, "max_length": max_len, "pairs": rows}
        log(f"   loglik {name}: {len(rows)} pairs")
    d = root / "tests" / "fixtures" / "eval"
    d.mkdir(parents=True, exist_ok=True)
    dump_json(out, d / "loglik_reference.json")
    (d / "README.md").write_text(
        "# loglik_reference.json\n\n"
        "Log-likelihoods of 20 (context, continuation) pairs as lm-evaluation-harness's HFLM scores them, computed by "
        "Hugging Face transformers in float32 (eager attention, CPU) for `models/tiny-llama-sotu` and the "
        "`tests/fixtures/families/llama3` fixture. Made by `scripts/gpu/make_family_fixtures.py`.\n\n"
        "Per model (`models.<name>`): `path`, `tokenizer_class`, `max_length`, and `pairs[]` with the original "
        "`context` and `continuation`, `moved_spaces` (trailing spaces of the context moved to the continuation), "
        "and for two tokenization rules (`default`: the tokenizer's default special tokens, what HFLM does since "
        "v0.4.9.2; `no_special_tokens`: `add_special_tokens=False`, older HFLM) the `context_enc`, "
        "`continuation_enc`, summed `logprob`, per-token `token_logprobs` and `is_greedy`.\n\n"
        "Some pairs merge tokens across the boundary (e.g. \"hello\" + \"world\", \"1234\" + \"5678\"): there the "
        "continuation ids are the tail of the whole string's ids, not the continuation's own encoding; pairs whose "
        "continuation encoding came out empty for some model were skipped (listed in `notes`).\n\n"
        "The rule, from lm-evaluation-harness (`lm_eval/api/model.py` TemplateLM._encode_pair, "
        "`lm_eval/models/huggingface.py` HFLM._loglikelihood_tokens):\n\n"
        "```\n" + out["harness_rule"] + "\n```\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------

def dump_sources(dest: Path):
    """Copy the transformers sources the fixtures depend on, for reading on the development machine."""
    import transformers
    base = Path(transformers.__file__).parent
    rels = ["integrations/bitnet.py", "quantizers/quantizer_bitnet.py", "utils/quantization_config.py",
            "masking_utils.py", "modeling_rope_utils.py", "tokenization_utils_tokenizers.py",
            "tokenization_utils_sentencepiece.py", "convert_slow_tokenizer.py", "tokenization_utils_base.py",
            "models/llama/tokenization_llama.py", "models/gemma/tokenization_gemma.py",
            "models/qwen2/tokenization_qwen2.py", "models/auto/tokenization_auto.py"]
    for fam in ("llama", "mistral", "qwen2", "gemma", "gemma2", "bitnet"):
        rels += [f"models/{fam}/configuration_{fam}.py", f"models/{fam}/modeling_{fam}.py"]
    for r in rels:
        p = base / r
        if p.exists():
            (dest / r).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest / r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=".", help="repository root (reads datasets/, docs/, src/, models/)")
    ap.add_argument("--out", required=True, help="output root; fixtures land in OUT/tests/fixtures/...")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--no-loglik", action="store_true")
    ap.add_argument("--dump-sources", default=None, help="copy relevant transformers sources here")
    args = ap.parse_args()

    import torch
    import transformers
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    log(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"cuda {torch.cuda.is_available()}")
    for mod in ("tokenizers", "sentencepiece", "safetensors", "jinja2", "accelerate", "google.protobuf"):
        try:
            m = __import__(mod, fromlist=["x"])
            log(f"   {mod} {getattr(m, '__version__', '?')}")
        except Exception as e:
            log(f"   {mod} missing ({e!r})")
    if args.dump_sources:
        try:
            dump_sources(Path(args.dump_sources))
        except Exception as e:
            log(f"!! dump_sources: {e!r}")
    root = Path(args.out)
    corpus = Corpus(Path(args.repo))
    log(f"corpus: {len(corpus.train_rows)} train chats, {len(corpus.val_rows)} validation chats, "
        f"{len(corpus.plain)} plain files, {len(corpus.paragraphs)} README paragraphs")
    shared, failed = {}, []
    for fam in [f for f in args.families.split(",") if f]:
        try:
            run_family(fam, args, corpus, root, shared)
        except Exception as e:
            failed.append(fam)
            log(f"!! {fam} FAILED: {e!r}")
            traceback.print_exc()
    if not args.no_loglik:
        try:
            loglik_reference(args, root, shared)
        except Exception as e:
            failed.append("loglik")
            log(f"!! loglik FAILED: {e!r}")
            traceback.print_exc()
    log(f"done; failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
