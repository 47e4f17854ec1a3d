#!/usr/bin/env bash
# Issue 17's device figures in ONE call of at most --budget seconds (default 120): `bench train` (train's QLoRA step
# on random tokens, Llama-2-7B shape, seq 512 x batch 4, LoRA r 16 on q/k/v/o, per-layer checkpointing) over the
# new base formats, with the device's peak memory (NVML, scripts/gpu/measure.py), and `bench quantize` (one 7B layer
# quantized on the device, extrapolated to 32 layers: HQQ's solver time). nf4-dq's row for the same shape is
# bench_speed.sh's "ours-512x4" case of the same session; `--with-nf4` measures it here too when time allows.
#
# On the GPU machine, from the repository root, with the carry folder made by scripts/gpu/prepare_speed.sh:
#   bash scripts/gpu/bench_bases.sh [--carry .gpu-speed] [--budget SECONDS] [--with-nf4] [--dry-run]
# Cases run in order of importance, each under a timeout cut to what is left of the budget; a case that no longer
# fits (NEED seconds, estimated from bench_speed's 7B runs: load + quantize ~25-40 s, 6 steps ~10 s) is skipped and
# says so. Results: $OUT/bench_bases/<case>.log (the app's JSON line, then measure.py's), a compact summary as the
# last line printed and in $OUT/bench_bases/summary.json. --dry-run prints the plan and runs nothing (CPU check).
set -uo pipefail
carry=.gpu-speed; budget=120; dry=0; with_nf4=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --carry) carry=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --with-nf4) with_nf4=1; shift ;;
    --dry-run) dry=1; shift ;;
    *) echo "unknown option $1 (--carry DIR, --budget SECONDS, --with-nf4, --dry-run)" >&2; exit 2 ;;
  esac
done
t_start=$(date +%s)
reserve=5      # seconds kept for the summary
dry_clock=0    # --dry-run: seconds the cases planned so far would typically take
elapsed() { echo $(( $(date +%s) - t_start + dry_clock )); }
left() { echo $(( budget - reserve - $(elapsed) )); }
OUT=${OUT:-/tmp/qln-out}; res="$OUT/bench_bases"; mkdir -p "$res"
appdir=/tmp/qln-app
app=(dotnet $appdir/QLoraNet.dll)
ckpt=/tmp/llama7b
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
if [[ $dry == 0 ]]; then
  source "$carry/env.sh" >/dev/null
  if [[ ! -f $appdir/QLoraNet.dll ]]; then mkdir -p $appdir && tar -xJf "$carry/app.tar.xz" -C $appdir; fi
fi

# run_case NAME LIMIT NEED CMD...: CMD under measure.py with a timeout of LIMIT or what is left, whichever is less;
# skipped (and recorded) when fewer than NEED seconds are left.
run_case() {
  local name=$1 limit=$2 need=$3; shift 3
  local l; l=$(left)
  if (( l < need )); then
    echo "{\"skipped\": \"$name\", \"seconds_left\": $l}" > "$res/$name.log"; echo "$name skipped ($l s left)"; return 1
  fi
  (( limit > l )) && limit=$l
  if [[ $dry == 1 ]]; then
    dry_clock=$(( dry_clock + need ))
    echo "$name (timeout ${limit}s, typically ${need}s, done at ~$(elapsed)s): $*"
    echo "{\"skipped\": \"$name\", \"dry_run\": true}" > "$res/$name.log"; return 0
  fi
  local t; t=$(date +%s)
  timeout "$limit" python3 scripts/gpu/measure.py "$name" -- "$@" > "$res/$name.log" 2> "$res/$name.err"
  echo "$name rc=$? $(( $(date +%s) - t ))s (at $(elapsed)s)"
}

# The 7B checkpoint (random weights, ~35 s) only if bench_speed.sh has not made it in this session.
if [[ $dry == 1 ]]; then echo "checkpoint 7B: reused from bench_speed.sh (else ~35 s of the budget)"
elif [[ ! -f $ckpt/config.json ]]; then
  t=$(date +%s); timeout "$(left)" python3 "$carry/make_random_llama.py" $ckpt --tokenizer models/tiny-llama-sotu/tokenizer.model > "$res/make7b.log" 2>&1
  echo "checkpoint 7B rc=$? $(( $(date +%s) - t ))s"
fi

# measure.py runs a program, not a shell function: each case spells the whole command line.
train=(bench train --model $ckpt --seq 512 --batch 4 --steps 6 --warmup 2 --hold-seconds 0 --quantization)
run_case train-ternary 60 40 "${app[@]}" "${train[@]}" ternary
run_case train-llm-int8 60 40 "${app[@]}" "${train[@]}" llm-int8
run_case quantize-hqq4 30 12 "${app[@]}" bench quantize --device cuda --quantization hqq4 --repeats 1
run_case train-hqq4 60 40 "${app[@]}" "${train[@]}" hqq4
[[ $with_nf4 == 1 ]] && run_case train-nf4-dq 60 40 "${app[@]}" "${train[@]}" nf4-dq

# Summary: per case the app's last JSON line (tokens/s, step time, ...) and measure.py's device peak.
python3 - "$res" "$(elapsed)" <<'PY' | tee "$res/summary.json"
import json, pathlib, sys
res, spent = pathlib.Path(sys.argv[1]), int(sys.argv[2])
out = {"summary": "bench_bases", "seconds": spent, "cases": {}}
for log in sorted(res.glob("*.log")):
    lines = []
    for l in log.read_text(errors="replace").splitlines():
        try: lines.append(json.loads(l))
        except ValueError: pass
    measure = next((l for l in reversed(lines) if "measure" in l), None)
    app = next((l for l in reversed(lines) if "measure" not in l), None)
    keep = {k: v for k, v in (app or {}).items() if any(s in k for s in ("tok", "step", "quantiz", "second", "skipped", "load", "gib", "extrapolat"))}
    if measure: keep.update(rc=measure["rc"], wall_s=measure["wall_s"], device_peak_used_gib=measure.get("device_peak_used_gib"))
    out["cases"][log.stem] = keep or {"error": "no JSON output (crashed or timed out; see the .err file)"}
print(json.dumps(out))
PY
