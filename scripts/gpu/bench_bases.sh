#!/usr/bin/env bash
# Every base format of issue 17 beside nf4-dq on the Llama-2-7B shape, on the GPU machine: `bench train` (train's
# QLoRA step on random tokens, seq 512 x batch 4, LoRA r 16 on q/k/v/o, per-layer checkpointing) and `bench quantize`
# (one layer quantized on the device, extrapolated to 32 layers). One JSON line per case.
# Run from the repo root there:  source .device/env.sh && bash scripts/gpu/bench_bases.sh [FORMATS...]
# FORMATS (default): nf4-dq llm-int8 hqq4 hqq3 hqq2 ternary bf16
set -uo pipefail
OUT=${OUT:-/tmp/qln-out}; mkdir -p "$OUT"
ckpt=${CKPT:-/tmp/llama7b}
app=(dotnet .device/app/QLoraNet.dll)
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
if [[ ! -f "$ckpt/config.json" ]]; then
  t0=$(date +%s); python3 .device/make_random_llama.py "$ckpt" --tokenizer models/tiny-llama-sotu/tokenizer.model >/dev/null 2>&1
  echo "{\"made_checkpoint\": \"$ckpt\", \"seconds\": $(( $(date +%s) - t0 ))}"
fi

# Runs "$@" while sampling the device's used memory; appends "peak_device_used_gib" to its last JSON line.
with_peak() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 20 > "$OUT/smi.log" 2>/dev/null &
  local smi=$!
  local line; line=$("$@" 2>"$OUT/err.log" | tail -1)
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  local peak; peak=$(sort -n "$OUT/smi.log" | tail -1)
  if [[ -z "$line" || "$line" != \{* ]]; then echo "{\"failed\": \"$*\", \"error\": $(tail -3 "$OUT/err.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"; return 1; fi
  echo "${line%\}}, \"peak_device_used_gib\": $(python3 -c "print(round(${peak:-0}/1024, 2))")}"
}

formats=("$@"); [[ ${#formats[@]} -eq 0 ]] && formats=(nf4-dq llm-int8 hqq4 hqq3 hqq2 ternary bf16)
"${app[@]}" info 2>&1 | grep '^kernel:' | python3 -c 'import json,sys; print(json.dumps({"kernels": [l.strip() for l in sys.stdin]}))'
for f in "${formats[@]}"; do
  with_peak "${app[@]}" bench train --model "$ckpt" --seq 512 --batch 4 --quantization "$f"
  "${app[@]}" bench quantize --device cuda --quantization "$f" --repeats 3 2>"$OUT/err.log" | tail -1
done
