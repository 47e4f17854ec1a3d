#!/usr/bin/env python3
"""Issue 18's GPU proof: log-likelihoods of (context, continuation) pairs scored by our `eval --tasks` equal those
transformers computes on the same GPU in the same run, for the tiny Llama and every family fixture.

Three subcommands, driven by scripts/gpu/eval_parity.sh:

  prepare DIR            writes DIR/pairs.jsonl (the 20 pairs of tests/fixtures/eval/loglik_reference.json) and
                         DIR/loglik_parity.yaml (a task file, output_type loglikelihood, empty target delimiter, so
                         each row is scored as exactly its (context, continuation) pair). Standard library only.
  transformers DIR M...  for each model directory M (name=path): the harness's pair encoding
                         (TemplateLM._encode_pair, the tokenizer's default special tokens as HFLM since v0.4.9.2;
                         checked against the reference file's ids where it has the model) and the summed log-probs
                         in float32 on cuda (TF32 off), written to DIR/hf-NAME.json. Needs torch and transformers.
  compare DIR            ours (DIR/ours-NAME.json, `eval --json --log-samples`) against DIR/hf-NAME.json where it
                         exists and against the CPU reference file; prints one JSON line, exit 1 on a failure.

Tolerance on a pair: 2e-3 per continuation token. log p = z - logsumexp(z), so a logit error of at most eps moves
a token's log-prob by at most 2 eps; eps = 1e-3 is this repository's fp32 logit parity bound against transformers
(tests/QLoraNet.Tests/Models/LlamaParityTests.cs), which covers the different summation orders of two
implementations' kernels (ours may use the fused CUDA kernels of src/Kernels) on the same weights.
"""
import json
import math
import sys
from pathlib import Path

REFERENCE = Path("tests/fixtures/eval/loglik_reference.json")
TOKEN_TOLERANCE = 2e-3


def prepare(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    ref = json.loads(REFERENCE.read_text())
    pairs = [(p["context"], p["continuation"]) for p in ref["models"]["tiny-llama-sotu"]["pairs"]]
    with (out / "pairs.jsonl").open("w") as f:
        for i, (c, k) in enumerate(pairs):
            f.write(json.dumps({"id": i, "context": c, "continuation": k}) + "\n")
    (out / "loglik_parity.yaml").write_text(
        "# Each row scored as exactly its (context, continuation) pair: issue 18's GPU parity check.\n"
        "task: loglik_parity\n"
        f"dataset_path: {out.resolve()}\n"
        "test_split: pairs\n"
        "output_type: loglikelihood\n"
        "doc_to_text: \"{{context}}\"\n"
        "doc_to_target: \"{{continuation}}\"\n"
        "target_delimiter: \"\"\n"
        "metric_list: [{metric: acc}]\n")
    print(f"{len(pairs)} pairs in {out}")


def encode_pair(tok, context, continuation):
    n = len(context) - len(context.rstrip())
    if n > 0:
        continuation = context[-n:] + continuation
        context = context[:-n]
    whole = [int(x) for x in tok(context + continuation)["input_ids"]]
    ctx = [int(x) for x in tok(context)["input_ids"]]
    return ctx, whole[len(ctx):]


def transformers_side(out: Path, models):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref = json.loads(REFERENCE.read_text())["models"]
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    for spec in models:
        name, path = spec.split("=", 1)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").cuda().eval()
        max_len = model.config.max_position_embeddings
        rows, id_mismatch = [], []
        for p in pairs:
            ctx, cont = encode_pair(tok, p["context"], p["continuation"])
            if name in ref:
                r = ref[name]["pairs"][p["id"]]["default"]
                if r["context_enc"] != ctx or r["continuation_enc"] != cont:
                    id_mismatch.append(p["id"])
            inp = (ctx + cont)[-(max_len + 1):][:-1]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([inp], device="cuda")).logits[0].float()
            lp = torch.log_softmax(logits[len(inp) - len(cont):], dim=-1)
            tgt = torch.tensor(cont, device="cuda")
            tok_lp = lp.gather(1, tgt[:, None])[:, 0]
            rows.append({"id": p["id"], "logprob": float(tok_lp.double().sum()), "n_continuation": len(cont),
                         "is_greedy": bool((lp.argmax(-1) == tgt).all())})
        (out / f"hf-{name}.json").write_text(json.dumps({"model": path, "device": torch.cuda.get_device_name(),
                                                         "id_mismatch_vs_reference": id_mismatch, "pairs": rows}))
        print(f"transformers {name}: {len(rows)} pairs, ids differing from the reference file: {id_mismatch}")
        del model
        torch.cuda.empty_cache()


def ours(out: Path, name):
    doc = json.loads((out / f"ours-{name}.json").read_text())
    samples = doc["samples"]["loglik_parity"]
    # origin is "FILE:LINE" (1-based): the pair's id is LINE - 1.
    return {int(s["origin"].rsplit(":", 1)[1]) - 1: s["loglikelihoods"][0] for s in samples}, doc["config"]


def compare(out: Path):
    ref = json.loads(REFERENCE.read_text())["models"]
    summary, ok = {}, True
    for f in sorted(out.glob("ours-*.json")):
        name = f.stem[len("ours-"):]
        mine, config = ours(out, name)
        entry = {"device": config.get("device"), "dtype": config.get("dtype"), "pairs": len(mine)}
        against = []
        hf = out / f"hf-{name}.json"
        if hf.exists():
            h = json.loads(hf.read_text())
            against.append(("transformers_same_gpu", {r["id"]: (r["logprob"], r["n_continuation"]) for r in h["pairs"]}))
            if h["id_mismatch_vs_reference"]:
                entry["hf_encoding_differs_from_reference_at"] = h["id_mismatch_vs_reference"]
        if name in ref:
            against.append(("reference_cpu", {i: (p["default"]["logprob"], len(p["default"]["continuation_enc"]))
                                              for i, p in enumerate(ref[name]["pairs"])}))
        for label, theirs in against:
            worst, failed = 0.0, []
            for i, (lp, n) in theirs.items():
                if i not in mine:
                    failed.append(f"pair {i} missing")
                    continue
                d = abs(mine[i] - lp)
                worst = max(worst, d)
                if not math.isfinite(mine[i]) or d > TOKEN_TOLERANCE * n:
                    failed.append(f"pair {i}: ours {mine[i]:.6f} vs {lp:.6f}")
            entry[label] = {"max_abs_diff": worst, "failed": failed}
            ok &= not failed
        if not against:
            entry["note"] = "nothing to compare against (no transformers run, not in the reference file)"
        summary[name] = entry
    summary["ok"] = ok and bool(summary)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    cmd, out = sys.argv[1], Path(sys.argv[2])
    if cmd == "prepare":
        prepare(out)
    elif cmd == "transformers":
        transformers_side(out, sys.argv[3:])
    elif cmd == "compare":
        sys.exit(compare(out))
    else:
        sys.exit(f"unknown subcommand {cmd} (prepare | transformers | compare)")
