#!/usr/bin/env bash
# QLoRA vs the peer (HF transformers + peft LoRA, bf16 base) on a Llama-2-7B-shaped checkpoint, on the GPU machine.
# Run from the repo root there:  source .device/env.sh && bash scripts/gpu/bench_7b.sh [CASES...]
# CASES (default: all):  ours-512x4 peer-512x4 ours-2048x1 peer-2048x1 ours-512x4-all peer-512x4-all
# Each case prints one JSON line; peak_device_used_gib is the device memory in use (nvidia-smi, sampled every
# 20 ms, whole device, idle baseline included) for ours, and NVML the same way inside the peer script.
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
  local line; line=$("$@" 2>"$OUT/err.log" | tail -1); local rc=$?
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  local peak; peak=$(sort -n "$OUT/smi.log" | tail -1)
  if [[ -z "$line" || "$line" != \{* ]]; then echo "{\"failed\": \"$*\", \"error\": $(tail -3 "$OUT/err.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"; return 1; fi
  echo "${line%\}}, \"peak_device_used_gib\": $(python3 -c "print(round(${peak:-0}/1024, 2))")}"
}

cases=("$@"); [[ ${#cases[@]} -eq 0 ]] && cases=(ours-512x4 peer-512x4 ours-2048x1 peer-2048x1 ours-512x4-all peer-512x4-all)
all=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
for c in "${cases[@]}"; do
  case $c in
    ours-512x4)       with_peak "${app[@]}" bench train --model "$ckpt" --seq 512 --batch 4 --split ;;
    ours-512x4-nock)  with_peak "${app[@]}" bench train --model "$ckpt" --seq 512 --batch 4 --no-ckpt ;;
    ours-2048x1)      with_peak "${app[@]}" bench train --model "$ckpt" --seq 2048 --batch 1 ;;
    ours-512x4-all)   with_peak "${app[@]}" bench train --model "$ckpt" --seq 512 --batch 4 --targets $all ;;
    ours-512x4-bf16)  with_peak "${app[@]}" bench train --model "$ckpt" --seq 512 --batch 4 --quantization bf16 ;;
    peer-512x4)       python3 .device/hf_peft_lora_bench.py --seq 512 --batch 4 2>/dev/null | tail -1 ;;
    peer-2048x1)      python3 .device/hf_peft_lora_bench.py --seq 2048 --batch 1 2>/dev/null | tail -1 ;;
    peer-512x4-all)   python3 .device/hf_peft_lora_bench.py --seq 512 --batch 4 --targets $all 2>/dev/null | tail -1 ;;
    *) echo "{\"unknown_case\": \"$c\"}" ;;
  esac
done
