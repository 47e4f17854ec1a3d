#!/usr/bin/env bash
# Issue 19's device numbers in ONE call: time and host/device peak of `quantize --calibration` for a 7B shape (random
# Llama-2-7B weights, /work/shared/gpu/make_random_llama.py, carried in the carry folder) in gptq4-g128, awq4-g128 and
# smoothquant, in that order, 32 samples x 512 tokens of datasets/sales/train.jsonl, bf16 on CUDA.
# The app in the carry folder must be built from a tree that holds this script's commit (scripts/gpu/prepare_speed.sh):
# an older app prints no "so far"/peak figures in its per-layer lines (the layer seconds are still read).
#
#   bash scripts/gpu/calibrated_7b.sh [--carry .gpu-speed] [--budget 330] [--gpu N] [--no-solver-bench]
#   bash scripts/gpu/calibrated_7b.sh --dry-cpu      # this script's checks on a CPU: tiny model, 4 x 64 tokens, g16
#
# First (unless --no-solver-bench, at most 45 s each): gptq-solver-device and gptq-solver-host, GPTQ's solver alone on
# one 7B layer shape with each in-block column loop (`bench quantize --gptq-columns`): the solver's share of a layer
# and which loop this machine runs faster.
# --cases gptq,awq,smoothquant runs only those (by name before the bits).
# --budget bounds the whole script (making or waiting for the 7B checkpoint included); each case gets the time left
# divided by the cases left, so a case that ends early leaves its share to the next ones. --gpu N pins everything to
# GPU N (CUDA_VISIBLE_DEVICES=N, PCI bus order, the order NVML's peaks are in).
# Every case runs under measure.py (wall time, host peak RSS of the child, NVML peak of its GPU sampled every 20 ms,
# kept when the case is cut off). The app prints one line per decoder layer as it ends (seconds of the layer, seconds
# so far, host peak RSS, device memory in use), so a case cut off by its limit still gives its per-layer time: the
# total is then extrapolated as mean layer seconds x layers, and the JSON says "extrapolated".
# Writes $OUT/calibrated/<case>.log (the app's stdout and stderr, measure.py's line last) and prints one JSON line per
# case (also $OUT/calibrated/summary.jsonl).
# PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True, as bench_speed.sh sets it: the layer loop frees and reallocates
# same-sized blocks every layer, and expandable segments keep that from fragmenting the caching allocator's reserve
# (NVML's "device used" is that reserve, not the live tensors). Runs before 2026-11-30 18:00 UTC did not set it.
set -uo pipefail
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
carry=.gpu-speed; budget=330; gpu=""; dry=0; solver_bench=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --carry) carry=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --gpu) gpu=$2; shift 2 ;;
    --dry-cpu) dry=1; shift ;;
    --no-solver-bench) solver_bench=0; shift ;;
    --cases) only=$2; shift 2 ;;
    *) echo "unknown option $1 (--carry DIR, --budget SECONDS, --gpu N, --dry-cpu, --no-solver-bench, --cases LIST)" >&2; exit 2 ;;
  esac
done
t_start=$(date +%s)
elapsed() { echo $(( $(date +%s) - t_start )); }
OUT=${OUT:-/tmp/qln-out}; out=$OUT/calibrated; rm -rf "$out"; mkdir -p "$out"
nvml_index=0
if [[ -n $gpu ]]; then export CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=$gpu; nvml_index=$gpu; fi

if [[ $dry == 1 ]]; then
  read -ra app <<< "${APP:-dotnet bin/Debug/net10.0/QLoraNet.dll}"
  ckpt=${CKPT:-models/tiny-llama-sotu}; device=cpu; dtype=fp32; n=4; l=64; group=16   # tiny MLP width 688 = 16 x 43
else
  source "$carry/env.sh" >/dev/null
  appdir=/tmp/qln-app
  if [[ ! -f $appdir/QLoraNet.dll ]]; then mkdir -p $appdir && tar -xJf "$carry/app.tar.xz" -C $appdir; fi
  app=(dotnet $appdir/QLoraNet.dll)
  ckpt=/tmp/llama7b; device=cuda; dtype=bf16; n=32; l=512; group=128
  nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
  # The checkpoint is complete when tokenizer_config.json (written last) is there. Another script of the same call may
  # be making it now (config.json but no tokenizer_config.json): wait for it rather than write the same folder twice.
  for _ in $(seq 90); do
    [[ -f $ckpt/tokenizer_config.json || ! -f $ckpt/config.json ]] && break
    sleep 2
  done
  if [[ ! -f $ckpt/config.json ]]; then
    python3 "$carry/make_random_llama.py" $ckpt.part.$$ --tokenizer models/tiny-llama-sotu/tokenizer.model > "$out/make7b.log" 2>&1 \
      && { [[ -f $ckpt/config.json ]] && rm -rf $ckpt.part.$$ || mv $ckpt.part.$$ $ckpt; } \
      || { echo "{\"error\": \"making the 7B checkpoint failed: $(tail -1 "$out/make7b.log" | tr -d '"\\')\"}"; exit 1; }
  fi
  [[ -f $ckpt/tokenizer_config.json ]] || { echo "{\"error\": \"$ckpt is incomplete (no tokenizer_config.json after waiting)\"}"; exit 1; }
  echo "checkpoint ready at $(elapsed) s" >&2
fi

# solver CASE COLUMNS: GPTQ's solver and packing alone on one 7B layer shape (bench quantize: random inputs' Hessian,
# one warm-up layer, one timed), with the in-block column loop on the host or in torch ops on the device: how much of
# a quantize case's layer time the solver is, and which loop is faster on this machine. At most 45 s each.
solver() {
  local name=$1 columns=$2 limit=45
  local -a shape=()
  [[ $dry == 1 ]] && shape=(--hidden 256 --intermediate 512)
  python3 scripts/gpu/measure.py "$name" --limit $limit -- "${app[@]}" bench quantize --quantization gptq4-g$group \
    --device $device --gptq-columns $columns "${shape[@]}" > "$out/$name.log" 2>&1
  python3 - "$out/$name.log" "$name" <<'PY' | tee -a "$out/summary.jsonl"
import json, sys
text = open(sys.argv[1], errors="replace").read().splitlines()
m = next((json.loads(x) for x in reversed(text) if x.startswith('{"measure"')), {})
b = next((json.loads(x) for x in reversed(text) if x.startswith('{"quantization"')), {})
r = {"case": sys.argv[2], "rc": m.get("rc"), "timed_out": m.get("timed_out"), "wall_s": m.get("wall_s"),
     "solver_layer_s": b.get("layer_s"), "solver_model_s": b.get("model_s"), "gptq_columns": b.get("gptq_columns"),
     "threads": b.get("threads")}
if m.get("rc") not in (0, None) and not b:
    r["error"] = next((x for x in reversed(text) if x.strip() and not x.startswith("{")), "")[:300]
print(json.dumps(r), flush=True)
PY
}
if [[ $solver_bench == 1 ]]; then
  solver gptq-solver-device device
  solver gptq-solver-host host
fi

cases=(gptq4-g$group awq4-g$group smoothquant)
# --cases gptq,awq,smoothquant (any subset, by name prefix): only those, in the order above.
if [[ -n ${only:-} ]]; then
  kept=(); for c in "${cases[@]}"; do [[ ,$only, == *,${c%%[0-9]*},* ]] && kept+=("$c"); done; cases=("${kept[@]}")
fi
# case FORMAT CASES_LEFT: runs one quantization under measure.py with the fair share of the time left, then prints its JSON.
run_case() {
  local fmt=$1 cases_left=$2
  local left=$(( budget - 5 - $(elapsed) ))
  local limit=$(( left / cases_left ))
  if (( limit < 20 )); then echo "{\"case\": \"$fmt\", \"skipped\": \"budget\", \"seconds_left\": $left}" | tee -a "$out/summary.jsonl"; return; fi
  # measure.py stops the app at the limit and still reports; the outer timeout is only a guard against a hung measure.py.
  timeout -k 5 $(( limit + 15 )) python3 scripts/gpu/measure.py "$fmt" --limit $limit -- "${app[@]}" quantize --model $ckpt \
    --quantization $fmt --device $device --dtype $dtype --calibration datasets/sales/train.jsonl \
    --calibration-samples $n --calibration-seq-len $l --out /tmp/cal-$fmt --overwrite > "$out/$fmt.log" 2>&1
  local rc=$?
  rm -rf /tmp/cal-$fmt
  python3 - "$out/$fmt.log" "$fmt" "$rc" "$limit" "$nvml_index" <<'PY' | tee -a "$out/summary.jsonl"
import json, re, sys
log, fmt, rc, limit, gpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
text = open(log, errors="replace").read().splitlines()
m = next((json.loads(x) for x in reversed(text) if x.startswith('{"measure"')), {})
# "calibrated layer 3/32 in 4.2 s (12.6 s so far); host peak RSS 1234 MiB; device used 20480 MiB (max 20480 MiB)"
# (an app older than this script prints only "calibrated layer 3/32 in 4.2 s").
layer = re.compile(r"^calibrated layer (\d+)/(\d+) in ([0-9.]+) s(?: \(([0-9.]+) s so far\))?"
                   r"(?:; host peak RSS (\d+) MiB)?(?:; device used (\d+) MiB \(max (\d+) MiB\))?")
rows = [r.groups() for r in map(layer.match, text) if r]
done = re.compile(r"^calibrated (\d+) layers in ([0-9.]+) s")
finished = next((d.groups() for d in map(done.match, text) if d), None)
r = {"case": fmt, "rc": m.get("rc", rc), "timed_out": m.get("timed_out", rc in (124, 137)), "limit_s": limit,
     "wall_s": m.get("wall_s")}
if rows:
    secs = [float(x[2]) for x in rows]
    layers = int(rows[-1][1])
    mean = sum(secs) / len(secs)
    r.update(layers_done=len(rows), layers=layers, layer_s=[round(s, 2) for s in secs], mean_layer_s=round(mean, 2))
    if len(secs) > 1:  # the first layer carries the one-time start-up of the device libraries
        r["mean_layer_s_after_first"] = round(sum(secs[1:]) / (len(secs) - 1), 2)
    if finished:
        r.update(calibration_s=float(finished[1]), calibration_s_is="measured")
    else:
        r.update(calibration_s=round(mean * layers, 1), calibration_s_is=f"extrapolated (mean of {len(rows)} layers x {layers})")
    last = rows[-1]
    if last[4]: r["app_host_peak_rss_mib"] = int(last[4])
    if last[6]: r["app_device_used_max_mib"] = int(last[6])
else:
    r["layers_done"] = 0
peaks = m.get("device_peaks_used_gib") or []
start = m.get("device_start_used_gib") or []
r["host_peak_rss_gib"] = m.get("host_peak_rss_gib")
if gpu < len(peaks) and peaks[gpu] > 0:
    r.update(gpu=gpu, device_peak_used_gib=peaks[gpu], device_used_before_gib=start[gpu] if gpu < len(start) else None)
summary = [x for x in text if x.startswith("calibrated ") and " layers in " in x]
if summary: r["summary"] = summary[-1]
if r["rc"] not in (0, 124, 137):
    r["error"] = next((x for x in reversed(text) if x.strip() and not x.startswith("{")), "")[:300]
print(json.dumps(r), flush=True)
PY
}
for i in "${!cases[@]}"; do run_case "${cases[$i]}" $(( ${#cases[@]} - i )); done
echo "done at $(elapsed) s of $budget" >&2
