#!/usr/bin/env bash
# Issue 13's measurements in ONE device call (docs/BENCHMARKS.md, "Speed run"): kernel parity, our training step
# against HF transformers + peft eager and torch.compile on the same GPU, the `train` verb against `bench train`, a
# low-memory run, a phase profile, and device peak memory of every run measured the same way (NVML, whole device,
# every 20 ms: scripts/gpu/measure.py). Prints one compact JSON summary as its last line (also $OUT/summary.json).
#
# On the GPU machine, from the repository root, with the carry folder made by scripts/gpu/prepare_speed.sh:
#   bash scripts/gpu/bench_speed.sh [--carry .gpu-speed] [--with-13b] [--kept N] [--skip-kernels] [--budget SECONDS] [--dry-run]
# The headline case, `train` and the other shapes run the selective scheme: the last N layers keep their activations
# instead of being recomputed (training.uncheckpointed_layers, --kept N, default 10), the memory for them coming from
# the embedding table and the other layers' checkpoints in host memory (training.embedding_on_host,
# training.checkpoints_on_host: session 37; 10 kept fit the 7B under half the compiled peer's peak). ours-512x4-more
# keeps one layer more; ours-512x4-device is session 36's headline (7 kept, nothing in host memory);
# ours-512x4-k1 the step at the default of 1 kept layer, the memory of full recomputation.
# --skip-kernels leaves out the kernel parity cases (when no kernel changed since they last ran on the device).
# The whole script, checkpoint building included, ends within --budget seconds (default 470: a device call's 480 s
# with room to spare). The cases run in order of importance; each runs under its own timeout, cut to what is left
# of the budget, and a case that no longer fits is skipped and says so (in its log and in the summary). A case that
# fails is reported and the others still run. --dry-run prints the plan (each case, its timeout and command) and runs
# nothing, charging each case the seconds it typically takes (NEED_S below, from the H100/H200 runs so far), so it
# shows which cases a normal run reaches within the budget.
set -uo pipefail
carry=.gpu-speed; with13=0; budget=470; dry=0; kept=10; kernels=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --carry) carry=$2; shift 2 ;;
    --with-13b) with13=1; shift ;;
    --budget) budget=$2; shift 2 ;;
    --kept) kept=$2; shift 2 ;;
    --skip-kernels) kernels=0; shift ;;
    --dry-run) dry=1; shift ;;
    *) echo "unknown option $1 (--carry DIR, --with-13b, --kept N, --skip-kernels, --budget SECONDS, --dry-run)" >&2; exit 2 ;;
  esac
done
t_start=$(date +%s)
reserve=8   # seconds kept for the summary at the end
dry_clock=0  # --dry-run: the seconds the cases planned so far would typically take
elapsed() { echo $(( $(date +%s) - t_start + dry_clock )); }
left() { echo $(( budget - reserve - $(elapsed) )); }
OUT=${OUT:-/tmp/qln-speed}; mkdir -p "$OUT/cases"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True   # both sides: less fragmentation, lower peaks
appdir=/tmp/qln-app
app=(dotnet $appdir/QLoraNet.dll)
ckpt=/tmp/llama7b
if [[ $dry == 0 ]]; then
  source "$carry/env.sh" >/dev/null
  if [[ ! -f $appdir/QLoraNet.dll ]]; then mkdir -p $appdir && tar -xJf "$carry/app.tar.xz" -C $appdir; fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$OUT/gpu.txt" 2>&1
else
  echo "dry run: budget ${budget}s, carry $carry, OUT $OUT" > "$OUT/gpu.txt"
fi

# run_case NAME LIMIT_S NEED_S CMD...: the command under measure.py, its output in cases/NAME.log, errors in
# cases/NAME.err, with a timeout of LIMIT_S or what is left of the budget, whichever is less; skipped (and recorded
# as such) when less than NEED_S seconds, about what the case typically takes, are left. Returns 1 when skipped.
run_case() {
  local name=$1 limit=$2 need=$3; shift 3
  local l; l=$(left)
  if (( l < need )); then
    echo "{\"skipped\": \"$name\", \"seconds_left\": $l}" > "$OUT/cases/$name.log"; echo "$name skipped ($l s left)"; return 1
  fi
  (( limit > l )) && limit=$l
  if [[ $dry == 1 ]]; then
    dry_clock=$(( dry_clock + need ))
    echo "$name (timeout ${limit}s, typically ${need}s, done at ~$(elapsed)s): $*"
    echo "{\"skipped\": \"$name\", \"dry_run\": true}" > "$OUT/cases/$name.log"; return 0
  fi
  local t; t=$(date +%s)
  timeout "$limit" python3 scripts/gpu/measure.py "$name" -- "$@" > "$OUT/cases/$name.log" 2> "$OUT/cases/$name.err"
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t ))s (at $(elapsed)s)"
  [[ $rc -ne 0 ]] && tail -3 "$OUT/cases/$name.err" | sed 's/^/    /'
  return 0
}

# 0. The 7B checkpoint (random weights, Llama-2 layout and tokenizer, ~35 s): inside the budget.
if [[ $dry == 1 ]]; then dry_clock=35; echo "checkpoint 7B (typically 35s, if /tmp/llama7b is absent)"
elif [[ ! -f $ckpt/config.json ]]; then
  t=$(date +%s); timeout "$(left)" python3 "$carry/make_random_llama.py" $ckpt --tokenizer models/tiny-llama-sotu/tokenizer.model > "$OUT/make7b.log" 2>&1
  echo "checkpoint 7B rc=$? $(( $(date +%s) - t ))s"
fi

# 1. Kernel parity and timing on the device, one process per op (a kernel fault poisons only its own CUDA context);
# the two integer products (ternary add/subtract kernel, int8 _int_mm) share one process to save a start-up.
[[ $kernels == 1 ]] && for s in rmsnorm rope glu dropout adamw ce lora nf4 ternary,int8; do
  run_case "kernel-${s//,/-}" 60 12 "${app[@]}" bench kernel --iters 10 --only $s
done

# 2. The headline case, ours with the split and the phase profile, then the peer eager and compiled.
all=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
# Warm-up as the peer's (5 steps); the same step at the default of one kept layer right after (equal memory).
offload=(--embedding-on-host --checkpoints-on-host)
run_case ours-512x4 120 37 "${app[@]}" bench train --model $ckpt --seq 512 --batch 4 --warmup 5 --uncheckpointed-layers $kept "${offload[@]}" --split --profile --check-layer-backward --hold-seconds 0
run_case ours-512x4-k1 80 22 "${app[@]}" bench train --model $ckpt --seq 512 --batch 4 --warmup 5 --uncheckpointed-layers 1 --profile --hold-seconds 0
# One kept layer more (does it still fit under half the compiled peer's memory?), and session 36's headline: 7 kept,
# nothing in host memory.
run_case ours-512x4-more 80 22 "${app[@]}" bench train --model $ckpt --seq 512 --batch 4 --warmup 5 --uncheckpointed-layers $((kept + 1)) "${offload[@]}" --hold-seconds 0
run_case ours-512x4-device 80 22 "${app[@]}" bench train --model $ckpt --seq 512 --batch 4 --warmup 5 --uncheckpointed-layers 7 --hold-seconds 0
run_case peer-512x4 120 30 python3 "$carry/hf_peft_lora_bench.py" --seq 512 --batch 4
run_case peer-512x4-compile 200 100 python3 "$carry/hf_peft_lora_bench.py" --seq 512 --batch 4 --compile --warmup 5

# 3. `train` on real text against `bench train`: completion rows longer than 512 tokens, packed (one document per
# row, so no attention mask, as in bench), same LoRA, optimizer, clipping and checkpointing as bench train;
# evaluation and checkpoints on.
python3 - "$OUT" "$kept" <<'PY'
import glob, json, sys
out, kept = sys.argv[1], sys.argv[2]
text = "\n\n".join(open(f, encoding="utf-8").read() for f in sorted(glob.glob("docs/*.md")) + ["README.md", "datasets/general/heldout.txt"])
rows = [text[i:i + 3200] for i in range(0, max(1, len(text) - 3200), 600)]
while len(rows) < 240: rows += rows
with open(f"{out}/train.jsonl", "w") as f:
    for r in rows[:224]: f.write(json.dumps({"text": r}) + "\n")
with open(f"{out}/val.jsonl", "w") as f:
    for r in rows[224:240]: f.write(json.dumps({"text": r}) + "\n")
def config(name, training, run):
    """A train config on the random 7B and the text above: the same model, base format, LoRA and data for every run."""
    with open(f"{out}/{name}", "w") as f:
        f.write(f"""model: {{path: /tmp/llama7b, dtype: bf16, device: cuda}}
quantization: {{type: nf4, double_quant: true, blocksize: 64, compute_dtype: bf16}}
lora: {{r: 16, alpha: 32, dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj]}}
data: {{train: {out}/train.jsonl, validation: {out}/val.jsonl, format: completion, max_seq_len: 512, packing: true, train_on_inputs: true}}
training: {{{training}}}
output: {{dir: {out}/{run}, keep_last: 1}}
""")
config("train.yaml", f"""max_steps: 40, micro_batch_size: 4, gradient_accumulation_steps: 1, learning_rate: 2.0e-4, scheduler: cosine, warmup_steps: 4,
  weight_decay: 0.0, max_grad_norm: 0.3, gradient_checkpointing: true, uncheckpointed_layers: {kept}, embedding_on_host: true,
  checkpoints_on_host: true, seed: 42, log_every: 10, eval_every: 20, save_every: 20""", "run")
# The low-memory run as `train` makes it: micro-batches of 1 x 512 accumulated 4 times, the embedding table,
# AdamW's moments and the checkpoints in host memory, no dense weights kept for backward, every layer recomputed
# (ours-lowmem-min's settings); evaluation and checkpoints on.
config("train-lowmem.yaml", """max_steps: 12, micro_batch_size: 1, gradient_accumulation_steps: 4, learning_rate: 2.0e-4, scheduler: cosine, warmup_steps: 2,
  weight_decay: 0.0, max_grad_norm: 0.3, gradient_checkpointing: true, embedding_on_host: true, optimizer_on_host: true,
  checkpoints_on_host: true, keep_dequantized_weights: false, uncheckpointed_layers: 0, seed: 42,
  log_every: 2, eval_every: 6, save_every: 6""", "run-lowmem")
PY
rm -rf "$OUT/run"
run_case train-512x4 150 45 "${app[@]}" train "$OUT/train.yaml"
cp "$OUT/run/metrics.csv" "$OUT/train_metrics.csv" 2>/dev/null

# 4. Low memory: micro-batches of 1 x 512 accumulated 4 times (the same 2048 tokens per optimizer step) and a
# quarter-size loss chunk: the activations and the loss's transients shrink 4x, the frozen base does not.
# The embedding table and AdamW's moments in host memory (training.embedding_on_host, training.optimizer_on_host)
run_case ours-lowmem-offload 90 30 "${app[@]}" bench train --model $ckpt --seq 512 --batch 1 --grad-accum 4 --logits-per-chunk 4194304 --steps 12 --warmup 4 --embedding-on-host --optimizer-on-host --hold-seconds 0
# ... and everything else off the device that costs only time: the no-keep layer backward (training.keep_dequantized_weights:
# false), the checkpoints in host memory (training.checkpoints_on_host) and every layer recomputed (the last one's
# record, free at 512 x 4, is held across the loss here): the smallest footprint `train` can be asked for
run_case ours-lowmem-min 90 30 "${app[@]}" bench train --model $ckpt --seq 512 --batch 1 --grad-accum 4 --logits-per-chunk 4194304 --steps 12 --warmup 4 --embedding-on-host --optimizer-on-host --checkpoints-on-host --layer-backward explicit-no-keep --uncheckpointed-layers 0 --hold-seconds 0
# ... the same with the last layer's record (the default of 1 kept layer)
run_case ours-lowmem-min-k1 90 30 "${app[@]}" bench train --model $ckpt --seq 512 --batch 1 --grad-accum 4 --logits-per-chunk 4194304 --steps 12 --warmup 4 --embedding-on-host --optimizer-on-host --checkpoints-on-host --layer-backward explicit-no-keep --hold-seconds 0
rm -rf "$OUT/run-lowmem"
run_case train-lowmem 120 50 "${app[@]}" train "$OUT/train-lowmem.yaml"
cp "$OUT/run-lowmem/metrics.csv" "$OUT/train_lowmem_metrics.csv" 2>/dev/null

# 5. The other shapes: nothing may regress there.
run_case ours-2048x1 80 20 "${app[@]}" bench train --model $ckpt --seq 2048 --batch 1 --uncheckpointed-layers $kept "${offload[@]}" --hold-seconds 0
run_case ours-4096x1 80 22 "${app[@]}" bench train --model $ckpt --seq 4096 --batch 1 --uncheckpointed-layers $kept "${offload[@]}" --hold-seconds 0
run_case ours-512x4-all 90 22 "${app[@]}" bench train --model $ckpt --seq 512 --batch 4 --targets $all --uncheckpointed-layers $kept "${offload[@]}" --hold-seconds 0

# 6. As time allows: the step with every fused kernel off (what they gain, and the loss they reach: the same up to
#    bf16 rounding); launches and GPU idle time from an nsys trace of three profiled steps; LoRA dropout's cost; the
#    peer's other shapes; the 13B shape.
# The headline step with the loss's torch ops on fp32 logits instead of the fused cross-entropy kernel (the kernel's
# gain, same call; session 33).
run_case ours-512x4-torchce 90 30 "${app[@]}" bench train --model $ckpt --seq 512 --batch 4 --warmup 5 --uncheckpointed-layers $kept "${offload[@]}" --torch-cross-entropy --hold-seconds 0
run_case ours-512x4-torchops 80 25 env QLORANET_DISABLE_CUDA_KERNELS=1 "${app[@]}" bench train --model $ckpt --seq 512 --batch 4 --hold-seconds 0
nsys_bin=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
[[ -z "$nsys_bin" && $dry == 1 ]] && nsys_bin=nsys   # the plan shows the case anyway
if [[ -z "$nsys_bin" ]]; then
  echo '{"skipped": "nsys-512x4", "reason": "no nsys on this machine"}' > "$OUT/cases/nsys-512x4.log"
else
  rm -f /tmp/qln-prof.nsys-rep /tmp/qln-prof.sqlite
  if run_case nsys-512x4 100 45 "$nsys_bin" profile --capture-range=cudaProfilerApi --capture-range-end=stop --trace=cuda --sample=none \
      --cpuctxsw=none --export=sqlite -o /tmp/qln-prof -f true "${app[@]}" bench train --model $ckpt --seq 512 --batch 4 --steps 2 --warmup 2 --profile --hold-seconds 0 \
      && [[ $dry == 0 ]]; then
  python3 - /tmp/qln-prof.sqlite > "$OUT/cases/nsys-summary.log" 2>&1 <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
def rows(table, cols="start, end"):
    try: return db.execute(f"SELECT {cols} FROM {table}").fetchall()
    except sqlite3.Error: return []
kernels = rows("CUPTI_ACTIVITY_KIND_KERNEL")
work = sorted(kernels + rows("CUPTI_ACTIVITY_KIND_MEMCPY") + rows("CUPTI_ACTIVITY_KIND_MEMSET"))
busy, cur_s, cur_e = 0, None, None
for s, e in work:
    if cur_e is None or s > cur_e:
        if cur_e is not None: busy += cur_e - cur_s
        cur_s, cur_e = s, e
    else: cur_e = max(cur_e, e)
if cur_e is not None: busy += cur_e - cur_s
span = (work[-1][1] - work[0][0]) if work else 0
steps = 3  # bench train --profile's default --profile-steps: the capture range holds exactly those steps
print(json.dumps({"nsys": True, "steps": steps, "kernels_per_step": round(len(kernels) / steps, 1),
                  "copies_and_sets_per_step": round((len(work) - len(kernels)) / steps, 1),
                  "span_ms_per_step": round(span / 1e6 / steps, 2), "busy_ms_per_step": round(busy / 1e6 / steps, 2),
                  "idle_ms_per_step": round((span - busy) / 1e6 / steps, 2), "idle_fraction": round(1 - busy / span, 4) if span else None}))
PY
  fi
fi
run_case ours-512x4-dropout 80 22 "${app[@]}" bench train --model $ckpt --seq 512 --batch 4 --dropout 0.05 --check-layer-backward --hold-seconds 0
run_case ours-lowmem 90 30 "${app[@]}" bench train --model $ckpt --seq 512 --batch 1 --grad-accum 4 --logits-per-chunk 4194304 --steps 12 --warmup 4 --hold-seconds 0
run_case peer-2048x1 80 30 python3 "$carry/hf_peft_lora_bench.py" --seq 2048 --batch 1
run_case peer-4096x1 80 30 python3 "$carry/hf_peft_lora_bench.py" --seq 4096 --batch 1
run_case peer-512x4-all 80 30 python3 "$carry/hf_peft_lora_bench.py" --seq 512 --batch 4 --targets $all
if [[ $with13 == 1 ]]; then
  if (( $(left) >= 150 )) && [[ $dry == 0 ]]; then
    t=$(date +%s); timeout $(( $(left) - 60 )) python3 "$carry/make_random_llama.py" /tmp/llama13b --shape llama2-13b --tokenizer models/tiny-llama-sotu/tokenizer.model > "$OUT/make13b.log" 2>&1
    echo "checkpoint 13B rc=$? $(( $(date +%s) - t ))s"
  fi
  run_case ours-13b-512x4 120 60 "${app[@]}" bench train --model /tmp/llama13b --seq 512 --batch 4 --hold-seconds 0
fi

# 7. The summary.
python3 - "$OUT" "$(elapsed)" <<'PY' | tee "$OUT/summary.json"
import csv, glob, json, os, re, sys
out, seconds = sys.argv[1], int(sys.argv[2])
def lines(name):
    try: return [json.loads(l) for l in open(f"{out}/cases/{name}.log") if l.startswith("{")]
    except (OSError, json.JSONDecodeError): return []
def case(name):
    ls = lines(name)
    if not ls: return None
    if "skipped" in ls[0]: return {"skipped": True}
    m = next((l for l in ls if "measure" in l), {})
    r = next((l for l in reversed(ls) if "measure" not in l), {})
    # peak_gib: NVML's whole-device peak (the driver's own share of an idle GPU, device_start_gib, included), the
    # measure the peer comparisons use; process_peak_gib: what the run's process itself held (context included).
    d = {"rc": m.get("rc"), "peak_gib": m.get("device_peak_used_gib"), "process_peak_gib": m.get("process_peak_used_gib"),
         "device_start_gib": (m.get("device_start_used_gib") or [None])[0], "wall_s": m.get("wall_s")}
    for k in ("tokens_per_s", "step_ms", "loss", "adamw_path", "base_gib", "host_checkpoints_per_step", "host_checkpoints_ahead_per_step", "host_checkpoints_on_demand_per_step", "host_checkpoint_pinned_mib", "split_dequant_ms", "split_attention_ms", "split_matmul_ms", "split_rest_ms",
              "device_allocated_peak_gib", "device_reserved_peak_gib", "load_allocated_peak_gib", "load_reserved_peak_gib"):
        if k in r: d[k] = r[k]
    if "peak_device_used_gib" in r: d["peer_own_peak_gib"] = r["peak_device_used_gib"]
    # The kernel choice (op: path) and the calls each fused op's kernel and reference served per step: [kernel, reference].
    if "kernels" in r: d["kernels"] = {k.split(" on ")[0]: k.split(": ", 1)[1].split(" ")[0] for k in r["kernels"] if ": " in k}
    if "fused_calls_per_step" in r: d["fused_calls_per_step"] = {op: [c["kernel"], c["reference"]] for op, c in r["fused_calls_per_step"].items()}
    # Which backward the checkpointed layers took, per step, and the explicit one's gradients against autograd's.
    for k in ("layer_backward", "layer_backwards_explicit_per_step", "layer_backwards_autograd_per_step", "layer_backward_check"):
        if k in r: d[k] = r[k]
    if "profile" in r:
        p = r["profile"]
        d["profile"] = {k: p.get(k) for k in ("phases", "step_device_ms", "step_wall_ms", "between_steps_device_ms", "recomputed_layers_per_step", "fused_calls_per_step")}
    return d
kern, details = {"checks": 0, "failures": 0, "sections": {}}, {}
for f in sorted(glob.glob(f"{out}/cases/kernel-*.log")):
    s = os.path.basename(f)[7:-4]
    ls = lines(f"kernel-{s}")
    if ls and "skipped" in ls[0]:
        kern["sections"][s] = {"skipped": True}; kern["skipped"] = kern.get("skipped", 0) + 1
        continue
    summ = next((l for l in ls if l.get("summary") == "bench kernel"), None)
    res = {}
    for l in ls:
        if "kernel" not in l: continue
        parity = sorted({v for k, v in l.items() if k.endswith("parity")})
        worst = max([v for k, v in l.items() if k.endswith("over_bound") and isinstance(v, (int, float))] or [0])
        key = f"{l['kernel']} {l.get('shape', '')} {l.get('dtype', '')}" + (f" {l['variant']}{'-dq' if l.get('double_quant') else ''}" if "variant" in l else "") + (f" flags={l['flags']}" if "flags" in l else "")
        res[key] = {"parity": ",".join(parity)} | ({"worst_over_bound": worst} if worst else {}) | {k: l[k] for k in l if k in ("fwd_speedup", "fwd_bwd_speedup", "step_speedup", "matmul_speedup", "speedup", "pct_copy", "fwd_pct_copy", "kernel_us", "bit_exact_flags")}
    details[s] = res
    sec = {"checks": summ["parity_checks"], "failures": summ["failures"]} if summ else {"error": "no summary (crashed or timed out)"}
    sec["parity"] = sorted({p for r in res.values() for p in r["parity"].split(",") if p})
    worst = [r["worst_over_bound"] for r in res.values() if "worst_over_bound" in r]
    if worst: sec["worst_over_bound"] = max(worst)
    for k in ("fwd_speedup", "fwd_bwd_speedup", "step_speedup", "matmul_speedup", "pct_copy"):
        v = [r[k] for r in res.values() if isinstance(r.get(k), (int, float))]
        if v: sec[k] = [min(v), max(v)]
    kern["sections"][s] = sec
    if summ: kern["checks"] += summ["parity_checks"]; kern["failures"] += summ["failures"]
    else: kern["failures"] += 1
cases = {n: case(n) for n in ["ours-512x4", "ours-512x4-k1", "ours-512x4-more", "ours-512x4-device", "peer-512x4", "peer-512x4-compile", "ours-2048x1", "peer-2048x1", "ours-4096x1", "peer-4096x1",
                              "ours-512x4-all", "peer-512x4-all", "ours-lowmem", "ours-lowmem-offload", "ours-lowmem-min", "ours-lowmem-min-k1", "ours-512x4-torchce", "ours-512x4-dropout", "ours-512x4-torchops", "ours-13b-512x4", "nsys-512x4"]}
def ratio(a, b, k):
    try: return round(cases[a][k] / cases[b][k], 3)
    except (TypeError, KeyError, ZeroDivisionError): return None
ratios = {"512x4 speed vs compiled": ratio("ours-512x4", "peer-512x4-compile", "tokens_per_s"),
          "512x4 memory vs compiled": ratio("ours-512x4", "peer-512x4-compile", "peak_gib"),
          "512x4 one kept layer (full recomputation's memory) speed vs compiled": ratio("ours-512x4-k1", "peer-512x4-compile", "tokens_per_s"),
          "512x4 one kept layer memory vs compiled": ratio("ours-512x4-k1", "peer-512x4-compile", "peak_gib"),
          "512x4 one more kept layer, speed vs compiled": ratio("ours-512x4-more", "peer-512x4-compile", "tokens_per_s"),
          "512x4 one more kept layer, memory vs compiled": ratio("ours-512x4-more", "peer-512x4-compile", "peak_gib"),
          "512x4 7 kept, nothing on host (session 36's headline), speed vs compiled": ratio("ours-512x4-device", "peer-512x4-compile", "tokens_per_s"),
          "512x4 7 kept, nothing on host (session 36's headline), memory vs compiled": ratio("ours-512x4-device", "peer-512x4-compile", "peak_gib"),
          "512x4 speed vs eager": ratio("ours-512x4", "peer-512x4", "tokens_per_s"),
          "512x4 memory vs eager": ratio("ours-512x4", "peer-512x4", "peak_gib"),
          "2048x1 speed vs eager": ratio("ours-2048x1", "peer-2048x1", "tokens_per_s"),
          "4096x1 speed vs eager": ratio("ours-4096x1", "peer-4096x1", "tokens_per_s"),
          "all-linear speed vs eager": ratio("ours-512x4-all", "peer-512x4-all", "tokens_per_s"),
          "lowmem speed vs ours-512x4": ratio("ours-lowmem", "ours-512x4", "tokens_per_s"),
          "lowmem with embedding and optimizer on host speed vs ours-512x4": ratio("ours-lowmem-offload", "ours-512x4", "tokens_per_s"),
          "lowmem with everything off the device speed vs ours-512x4": ratio("ours-lowmem-min", "ours-512x4", "tokens_per_s"),
          "512x4 fused cross-entropy vs torch-ops loss": ratio("ours-512x4", "ours-512x4-torchce", "tokens_per_s"),
          "dropout 0.05 speed vs none": ratio("ours-512x4-dropout", "ours-512x4", "tokens_per_s"),
          "512x4 fused kernels vs torch-ops": ratio("ours-512x4", "ours-512x4-torchops", "tokens_per_s")}
try: ratios["512x4 loss fused minus torch-ops"] = round(cases["ours-512x4"]["loss"] - cases["ours-512x4-torchops"]["loss"], 4)
except (TypeError, KeyError): pass
train = case("train-512x4") or {}
try:  # the kernel rows `train` prints at its start, "kernel  rmsnorm on cuda: cuda-ptx (...)": op and path
    found = re.findall(r"kernel\s+(\S[^:\n]*?) on \w+: (\S+)", open(f"{out}/cases/train-512x4.log", encoding="utf-8", errors="replace").read())
    if found: train["kernels"] = {op: path for op, path in found}
except OSError: pass
try:
    rows = list(csv.DictReader(open(f"{out}/train_metrics.csv")))
    after = [r for r in rows if int(r["step"]) > 5]
    tokens = sum(float(r["tokens"]) for r in after)
    steps_s = sum(float(r["step_s"]) for r in after)
    span_s = float(after[-1]["elapsed_s"]) - float(rows[[int(r["step"]) for r in rows].index(5)]["elapsed_s"])
    train.update({"steps_timed": len(after), "step_tokens_per_s": round(tokens / steps_s, 1), "end_to_end_tokens_per_s": round(tokens / span_s, 1)})
    if cases["ours-512x4"]:
        train["ratio_to_bench_steps"] = round(train["step_tokens_per_s"] / cases["ours-512x4"]["tokens_per_s"], 3)
        train["ratio_to_bench_end_to_end"] = round(train["end_to_end_tokens_per_s"] / cases["ours-512x4"]["tokens_per_s"], 3)
except Exception as e:
    train["metrics_error"] = f"{type(e).__name__}: {e}"
lowmem_train = case("train-lowmem") or {}
try:  # steps after the first 3 (warm-up): tokens over their step times
    rows = [r for r in csv.DictReader(open(f"{out}/train_lowmem_metrics.csv")) if int(r["step"]) > 3]
    lowmem_train["step_tokens_per_s"] = round(sum(float(r["tokens"]) for r in rows) / sum(float(r["step_s"]) for r in rows), 1)
except Exception as e:
    lowmem_train["metrics_error"] = f"{type(e).__name__}: {e}"
train["lowmem"] = lowmem_train
json.dump(details, open(f"{out}/kernel_details.json", "w"), indent=1)
nsys = lines("nsys-summary")
print(json.dumps({"gpu": open(f"{out}/gpu.txt").read().strip(), "seconds": seconds, "kernel_parity": kern, "cases": cases,
                  "ratios": ratios, "train_vs_bench": train, "nsys": nsys[0] if nsys else None}, separators=(",", ":")))
PY
