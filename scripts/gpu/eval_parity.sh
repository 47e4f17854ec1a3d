#!/usr/bin/env bash
# Issue 18's GPU parity: the log-likelihoods of 20 (context, continuation) pairs as `eval --tasks` scores them on
# the GPU (fp32, base format none) equal transformers' computed on the same GPU in the same run, for the tiny Llama
# and each family fixture (Llama 3, Mistral, Qwen2, Gemma, Gemma 2); also against the CPU reference file
# tests/fixtures/eval/loglik_reference.json. Tolerance and method: scripts/gpu/eval_parity.py.
#
# On the GPU machine, from the repository root, with the carry folder of scripts/gpu/prepare_speed.sh (its app must
# be published from a tree that has `eval --tasks`, i.e. after the evaluation branch is merged):
#   bash scripts/gpu/eval_parity.sh [--carry .gpu-speed] [--budget SECONDS]
# Dry path on the CPU (no transformers; compares against the reference file only):
#   bash scripts/gpu/eval_parity.sh --app "dotnet bin/Debug/net10.0/QLoraNet.dll" --device cpu --no-transformers
# Writes $OUT/eval_parity/ (pairs, task file, ours-*.json, hf-*.json, logs); the last line printed is the summary.
# About 60 s on one H200 (six tiny models, each side), at most --budget (default 300) seconds.
set -uo pipefail
carry=.gpu-speed; app=""; device=cuda; hf=1; budget=300
while [[ $# -gt 0 ]]; do
  case $1 in
    --carry) carry=$2; shift 2 ;;
    --app) app=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --no-transformers) hf=0; shift ;;
    --budget) budget=$2; shift 2 ;;
    *) echo "unknown option $1 (--carry DIR, --app CMD, --device cuda|cpu, --no-transformers, --budget SECONDS)" >&2; exit 2 ;;
  esac
done
out=${OUT:-/tmp/qln-out}/eval_parity; mkdir -p "$out"
t_start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t_start) )); }

if [[ -z $app ]]; then
  source "$carry/env.sh" >/dev/null
  appdir=/tmp/qln-app
  if [[ ! -f $appdir/QLoraNet.dll ]]; then mkdir -p $appdir && tar -xJf "$carry/app.tar.xz" -C $appdir; fi
  app="dotnet $appdir/QLoraNet.dll"
fi
read -r -a appcmd <<< "$app"

models=(tiny-llama-sotu=models/tiny-llama-sotu)
for f in llama3 mistral qwen2 gemma gemma2; do models+=("$f=tests/fixtures/families/$f"); done

python3 scripts/gpu/eval_parity.py prepare "$out" || exit 1
for m in "${models[@]}"; do
  name=${m%%=*}; dir=${m#*=}
  (( $(left) > 10 )) || { echo "ours $name skipped: budget spent"; continue; }
  timeout $(( $(left) < 120 ? $(left) : 120 )) "${appcmd[@]}" eval --model "$dir" --device "$device" --dtype fp32 --quantization none \
    --tasks "$out/loglik_parity.yaml" --batch-size 4 --json --log-samples --output "$out/ours-$name.json" \
    > /dev/null 2> "$out/ours-$name.err"
  echo "ours $name rc=$?"; [[ -s $out/ours-$name.err ]] && tail -2 "$out/ours-$name.err" | sed 's/^/    /'
done
if (( hf )); then
  (( $(left) > 20 )) || echo "transformers skipped: budget spent"
  (( $(left) > 20 )) && timeout "$(left)" python3 scripts/gpu/eval_parity.py transformers "$out" "${models[@]}" > "$out/hf.log" 2>&1
  echo "transformers rc=$?"; tail -8 "$out/hf.log" | sed 's/^/    /'
fi
python3 scripts/gpu/eval_parity.py compare "$out" | tee "$out/summary.json"
exit "${PIPESTATUS[0]}"
