#!/usr/bin/env bash
# Multi-GPU measurements for issue 16 (data-parallel QLoRA on NCCL), in one call on a host with >= 2 GPUs.
# Prepare on the CPU machine: bash scripts/gpu/publish.sh   (-> .device/app, .device/env.sh)
# Run from the repo root on the GPU machine:
#   source .device/env.sh && bash scripts/gpu/bench_multi_gpu.sh [CASES...]
# Every case prints one JSON line (rank 0's; the other ranks' lines are prefixed "[rank r]" by our launcher and
# dropped here). CASES (default: all, in this order):
#   selftest-gpus      dist-selftest over NCCL on 2 GPUs, our launcher: broadcast / all-reduce (fp32, bf16, fp64,
#                      checked against the exact sum within the reordering bound) / barrier, and the bus bandwidth
#                      of a 256 MiB fp32 all-reduce. Expects "ok": true.
#   selftest-torchrun  the same under torchrun (MASTER_PORT is torchrun's store; our rendezvous takes MASTER_PORT+1).
#   bench-1            bench train, 1 GPU, 7B shape, seq 512 x micro-batch 4, r=16 q/k/v/o (the baseline).
#   bench-2-gpus       bench train --gpus 2 (our launcher).      } EXPECT the step wiring: under a launcher, bench
#   bench-2-torchrun   bench train under torchrun, 2 processes.  } train selects GPU LOCAL_RANK, all-reduces the
#                      LoRA gradients every step, and rank 0's JSON has "world_size" and "tokens_per_s" for the
#                      whole cluster (all ranks' tokens / step time). Target: >= 1.9x bench-1.
#   train-equiv        train, 1 GPU with gradient_accumulation_steps=4, against 2 GPUs (--gpus 2 and torchrun) with
#                      accumulation 2: the same global batch and data order; compares metrics.csv losses step by step
#                      (bf16 compute: expect max relative difference ~1e-3, certainly < 1e-2) and reports tokens/s.
#                      lora.dropout=0: with dropout, equality also needs the masks drawn per global micro-batch.
set -uo pipefail
OUT=${OUT:-/tmp/qln-multi}; mkdir -p "$OUT"
ckpt=${CKPT:-/tmp/llama7b}
read -ra app <<< "${APP:-dotnet .device/app/QLoraNet.dll}"
backend=${BACKEND:-nccl}   # BACKEND=loopback checks the script itself on a CPU machine
gpus=${GPUS:-2}
export NCCL_NVLS_ENABLE=0   # never NVLink multicast (the app also refuses any other value)
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
torchrun=(python3 -m torch.distributed.run --standalone --nproc-per-node "$gpus" --no-python)

json_fail() { python3 -c 'import json,sys; print(json.dumps({"case": sys.argv[1], "failed": True, "rc": int(sys.argv[2]), "stderr_tail": open(sys.argv[3]).read()[-1500:]}))' "$@"; }

# Runs a case, prints its last unprefixed JSON line with "case" and "seconds" added (or a failure line).
run_case() {
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; local rc=$?
  local line; line=$(grep -E '^\{' "$OUT/$name.out" | tail -1)
  if [[ $rc -ne 0 || -z "$line" ]]; then json_fail "$name" "$rc" "$OUT/$name.err"; return 1; fi
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d={"case": sys.argv[2], **d, "seconds": round(int(sys.argv[3]) / 1e9, 1)}; print(json.dumps(d))' \
    "$line" "$name" "$(( $(date +%s%N) - t0 ))" | tee "$OUT/$name.json"
}

need_ckpt() {
  if [[ ! -f "$ckpt/config.json" ]]; then
    python3 .device/make_random_llama.py "$ckpt" --tokenizer models/tiny-llama-sotu/tokenizer.model >/dev/null 2>&1 \
      || { echo '{"failed": "make_random_llama"}'; exit 1; }
  fi
}

# train on the sales data with the 7B-shaped checkpoint; $1 = output dir, $2 = accumulation, rest = launcher prefix
train_cmd() {
  local dir=$1 acc=$2; shift 2
  echo "$@" "${app[@]}" train configs/quickstart.yaml "model.path=$ckpt" model.device=cuda model.dtype=bf16 \
    quantization.compute_dtype=bf16 lora.r=16 lora.alpha=32 lora.dropout=0 data.max_seq_len=512 data.packing=true \
    training.micro_batch_size=4 "training.gradient_accumulation_steps=$acc" training.max_steps=${EQUIV_STEPS:-20} \
    training.learning_rate=2e-4 training.gradient_checkpointing=true training.eval_every=0 training.save_every=0 \
    training.log_every=1 "output.dir=$dir"
}

equiv() {
  need_ckpt
  rm -rf "$OUT"/eq-*
  local ok=1
  eval "$(train_cmd "$OUT/eq-1" 4)" >"$OUT/eq-1.log" 2>&1 || ok=0
  eval "$(train_cmd "$OUT/eq-2g" 2) --gpus $gpus" >"$OUT/eq-2g.log" 2>&1 || ok=0
  eval "$(train_cmd "$OUT/eq-2t" 2 "${torchrun[@]}")" >"$OUT/eq-2t.log" 2>&1 || ok=0
  python3 - "$OUT" "$ok" <<'EOF'
import csv, json, sys, os
out, ok = sys.argv[1], sys.argv[2] == "1"
def rows(d):
    p = os.path.join(out, d, "metrics.csv")
    return list(csv.DictReader(open(p))) if os.path.exists(p) else []
one = rows("eq-1")
res = {"case": "train-equiv", "steps": len(one), "all_ran": ok}
for name in ["eq-2g", "eq-2t"]:
    two = rows(name)
    pairs = [(float(a["loss"]), float(b["loss"])) for a, b in zip(one, two)]
    res[name] = {
        "steps": len(two),
        "max_abs_diff": max((abs(a - b) for a, b in pairs), default=None),
        "max_rel_diff": max((abs(a - b) / abs(a) for a, b in pairs if a), default=None),
        "first_losses": [round(b, 5) for _, b in pairs[:3]],
        "tokens_per_s_median": sorted(float(r["tokens_per_s"]) for r in two)[len(two) // 2] if two else None,
    }
res["eq-1"] = {"first_losses": [round(float(r["loss"]), 5) for r in one[:3]],
               "tokens_per_s_median": sorted(float(r["tokens_per_s"]) for r in one)[len(one) // 2] if one else None}
print(json.dumps(res))
EOF
}

nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | python3 -c 'import json,sys; print(json.dumps({"gpus": [l.strip() for l in sys.stdin]}))'
cases=("$@"); [[ ${#cases[@]} -eq 0 ]] && cases=(selftest-gpus selftest-torchrun bench-1 bench-2-gpus bench-2-torchrun train-equiv)
for c in "${cases[@]}"; do
  case $c in
    selftest-gpus)     run_case "$c" "${app[@]}" dist-selftest --gpus "$gpus" --backend "$backend" --bucket-kb 1024 --bench-mb 256 --bench-iters 20 ;;
    selftest-torchrun) run_case "$c" "${torchrun[@]}" "${app[@]}" dist-selftest --backend "$backend" --bucket-kb 1024 --bench-mb 256 --bench-iters 20 ;;
    bench-1)           need_ckpt; run_case "$c" "${app[@]}" bench train --model "$ckpt" --seq 512 --batch 4 ;;
    bench-2-gpus)      need_ckpt; run_case "$c" "${app[@]}" bench train --model "$ckpt" --seq 512 --batch 4 --gpus "$gpus" ;;
    bench-2-torchrun)  need_ckpt; run_case "$c" "${torchrun[@]}" "${app[@]}" bench train --model "$ckpt" --seq 512 --batch 4 ;;
    train-equiv)       equiv ;;
    *) echo "{\"unknown_case\": \"$c\"}" ;;
  esac
done
# Speedup, when both bench cases ran.
if [[ -f "$OUT/bench-1.json" ]]; then
  for two in bench-2-gpus bench-2-torchrun; do
    [[ -f "$OUT/$two.json" ]] && python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); print(json.dumps({"speedup": sys.argv[3], "world_size": b.get("world_size"), "x": round(b["tokens_per_s"]/a["tokens_per_s"], 3)}))' "$OUT/bench-1.json" "$OUT/$two.json" "$two"
  done
fi
