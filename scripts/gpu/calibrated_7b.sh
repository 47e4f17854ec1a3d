#!/usr/bin/env bash
# Issue 19's device numbers in ONE call: time and device/host peak of `quantize --calibration` for a 7B shape
# (random Llama-2-7B weights, scripts/gpu/prepare_speed.sh's make_random_llama.py) in gptq4-g128 and smoothquant,
# and the held-out loss of the results (meaningless on random weights: it only proves they load and run).
# The app in the carry folder must be built from a tree that holds the calibrated branch (prepare_speed.sh after merging).
#   bash scripts/gpu/calibrated_7b.sh [--carry .gpu-speed] [--budget SECONDS]   (default budget 300 s after the checkpoint)
# Writes $OUT/calibrated/*.log and prints one JSON line per case.
set -uo pipefail
carry=.gpu-speed; budget=300
while [[ $# -gt 0 ]]; do
  case $1 in
    --carry) carry=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    *) echo "unknown option $1 (--carry DIR, --budget SECONDS)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-/tmp/qln-out}; out=$OUT/calibrated; mkdir -p "$out"
source "$carry/env.sh" >/dev/null
appdir=/tmp/qln-app
if [[ ! -f $appdir/QLoraNet.dll ]]; then mkdir -p $appdir && tar -xJf "$carry/app.tar.xz" -C $appdir; fi
app=(dotnet $appdir/QLoraNet.dll)
ckpt=/tmp/llama7b
if [[ ! -f $ckpt/config.json ]]; then
  python3 "$carry/make_random_llama.py" $ckpt --tokenizer models/tiny-llama-sotu/tokenizer.model > "$out/make7b.log" 2>&1 || { echo '{"error": "make 7B failed"}'; exit 1; }
fi
t0=$(date +%s)
# case NAME FORMAT SAMPLES LENGTH LIMIT
run() {
  local name=$1 fmt=$2 n=$3 l=$4 limit=$5 left=$(( budget - ($(date +%s) - t0) ))
  if (( left < 30 )); then echo "{\"case\": \"$name\", \"skipped\": \"budget\"}"; return; fi
  (( limit > left )) && limit=$left
  local t=$(date +%s)
  timeout "$limit" "${app[@]}" quantize --model $ckpt --quantization $fmt --device cuda --dtype bf16 \
    --calibration datasets/sales/train.jsonl --calibration-samples $n --calibration-seq-len $l \
    --out /tmp/cal-$name --overwrite > "$out/$name.log" 2>&1
  local rc=$? s=$(( $(date +%s) - t ))
  local summary=$(grep -E "^calibrated [0-9]+ layers" "$out/$name.log" | tail -1 | sed 's/"/\\"/g')
  echo "{\"case\": \"$name\", \"rc\": $rc, \"seconds\": $s, \"summary\": \"$summary\"}"
}
run gptq4-g128 gptq4-g128 32 512 200
run smoothquant smoothquant 32 512 90
