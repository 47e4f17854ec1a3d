#!/usr/bin/env bash
# Issue 16's GPU proof (data-parallel QLoRA on NCCL) in ONE device call on a host with 2 GPUs (nvidia-h200-x2), at
# most --budget seconds (default 200) from start to summary, the 7B checkpoint's making included when it is absent.
# Results under $OUT/multi-gpu/ (cases/<name>.log: each command's output with measure.py's line last; .err: its
# stderr); the last line printed is one compact JSON summary, also $OUT/multi-gpu/summary.json.
#
# On the GPU machine, from the repository root, with the carry folder of scripts/gpu/prepare_speed.sh:
#   bash scripts/gpu/bench_multi_gpu.sh [--carry .gpu-speed] [--budget 200] [--core]
# --core: only selftest, bench-1, bench-2 and bench-1-acc1 (the speed-up and the equality; no diagnostics).
# Checked on a CPU machine (loopback backend, the tiny model, the Debug build; no NCCL, no torchrun unless present):
#   bash scripts/gpu/bench_multi_gpu.sh --dry-cpu
#
# Cases, in order of importance (each under its own timeout, never past the budget; a failed case is reported and
# the others still run; optional ones are skipped, and say so, when the budget has no room for them):
#   nccl            where libnccl.so.2 is: the copy libtorch_cuda.so links (ldd), else torch/lib, else the
#                   nvidia/nccl wheel, else ld.so.cache. Exported as QLORANET_NCCL_LIBRARY, so the app loads that file
#                   (the same one PyTorch uses); the app reports the version and path it loaded.
#   selftest        dist-selftest --gpus 2 over NCCL: broadcast bit for bit, all-reduce of fp32/bf16/fp64 within the
#                   reordering bound, barrier, bus bandwidth of a 256 MiB fp32 all-reduce.
#   bench-1         bench train on GPU 0: Llama-2-7B shape (random weights), seq 512 x micro-batch 4, LoRA r=16 on
#                   q/k/v/o, NF4+DQ, bf16, checkpointing, accumulation 2 (global batch 8 x 512).
#   bench-2         the same global batch on 2 GPUs: --gpus 2, accumulation 1 (each GPU one micro-batch of 4 per
#                   step). Same data, same adapter init, so the per-step losses compare with bench-1's; tokens/s
#                   ratio = the speed-up at the same global batch (the 1-GPU side amortises its optimizer step over
#                   2 micro-batches, so this ratio is the conservative one).
#   bench-1-acc1    optional: 1 GPU, accumulation 1: the issue's "same per-GPU micro-batch" baseline (target >= 1.9x);
#                   on the GPU with --profile (3 more steps after the timed ones: host and device ms by phase).
#   bench-2 is profiled too (after its timed steps, on every rank: rank 0's in its JSON, the others' on stderr), so a
#   2-GPU step's extra time over bench-1-acc1's shows by phase (host phases longer: CPU-side; optimizer phase: the
#   collectives; one rank's phases longer than the other's: waiting for it).
#   bench-1-omp1    optional: bench-1-acc1 with one OpenMP thread, as the launcher gives each rank: does that alone cost?
#   pair-1gpu       optional: two independent 1-GPU runs at once (GPU 0 and GPU 1, one OpenMP thread each, no
#                   collectives): what two processes on one host cost each other (CPU, memory, PCIe) without any
#                   communication. Against bench-1-omp1 it separates contention from the collectives' cost.
#   pair-1gpu-pinned  optional: the same, each process on its own half of the cores (taskset).
#   selftest-torchrun  optional: the self test under torchrun (the other launch form).
#   train-equiv     optional: the `train` verb on the tiny model on CUDA (bf16, LoRA dropout 0.05): 1 GPU with
#                   accumulation 4 vs --gpus 2 with accumulation 2, metrics.csv compared step by step.
set -uo pipefail
carry=.gpu-speed; budget=200; dry=0; core=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --carry) carry=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --dry-cpu) dry=1; shift ;;
    --core) core=1; shift ;;
    *) echo "unknown option $1 (--carry DIR, --budget SECONDS, --dry-cpu, --core)" >&2; exit 2 ;;
  esac
done
t_start=$(date +%s)
elapsed() { echo $(( $(date +%s) - t_start )); }
OUT=${OUT:-/tmp/qln-multi}; res=$OUT/multi-gpu; rm -rf "$res"; mkdir -p "$res/cases"
export NCCL_NVLS_ENABLE=0   # never NVLink multicast (the app refuses any other value)
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

if [[ $dry == 1 ]]; then
  read -ra app <<< "${APP:-dotnet bin/Debug/net10.0/QLoraNet.dll}"
  backend=loopback; device=cpu; dtype=fp32; ckpt=${CKPT:-models/tiny-llama-sotu}
  shape=(--seq 32 --batch 2 --r 4 --steps 2 --warmup 1)
  selftest_mb=4; slow=4   # a CPU all-reduce of 256 MiB takes minutes; a shared CPU is slower than a GPU
  prof=()                 # --profile needs CUDA events
  # One CPU thread in every process, as the launcher gives each rank: then the CPU runs agree bit for bit.
  export OMP_NUM_THREADS=1
else
  source "$carry/env.sh" >/dev/null
  appdir=/tmp/qln-app
  if [[ ! -f $appdir/QLoraNet.dll ]]; then mkdir -p $appdir && tar -xJf "$carry/app.tar.xz" -C $appdir; fi
  app=(dotnet $appdir/QLoraNet.dll)
  backend=nccl; device=cuda; dtype=bf16; ckpt=/tmp/llama7b
  shape=(--seq 512 --batch 4 --r 16 --steps 20 --warmup 2)
  selftest_mb=256; slow=1
  prof=(--profile --profile-steps 3)
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader > "$res/gpu.txt" 2>&1
  # Each GPU's CPU and NUMA affinity: a host-bound step launches slower from cores far from its GPU.
  nvidia-smi topo -m > "$res/topo.txt" 2>&1
fi

# run_case NAME LIMIT_S CMD...: under measure.py (wall time, per-GPU NVML peaks) and a timeout clipped to the budget.
run_case() {
  local name=$1 limit=$(( $2 * slow )); shift 2
  local left=$(( budget - 8 - $(elapsed) ))
  (( left < limit )) && limit=$left
  if (( limit < 5 )); then echo "{\"skipped\": \"$name\", \"seconds_left\": $left}" > "$res/cases/$name.log"; echo "$name skipped ($left s left)"; return 1; fi
  local t=$(date +%s)
  timeout -k 5 "$limit" python3 scripts/gpu/measure.py "$name" -- "$@" > "$res/cases/$name.log" 2> "$res/cases/$name.err"
  local rc=$?
  # Killed at the timeout, measure.py printed nothing: say so in its place.
  grep -q '"measure"' "$res/cases/$name.log" || echo "{\"measure\": \"$name\", \"rc\": $rc, \"timed_out\": $([[ $rc == 124 || $rc == 137 ]] && echo true || echo false), \"limit_s\": $limit}" >> "$res/cases/$name.log"
  echo "$name rc=$rc $(( $(date +%s) - t ))s (at $(elapsed)s)"
  [[ $rc -ne 0 ]] && tail -3 "$res/cases/$name.err" | sed 's/^/    /'
  return 0
}
# optional NAME SECONDS_NEEDED: true while the budget leaves room, else records the skip.
optional() {
  if [[ $core == 1 && $1 != bench-1-acc1 ]]; then echo "{\"skipped\": \"$1\", \"reason\": \"--core\"}" > "$res/cases/$1.log"; echo "$1 skipped (--core)"; return 1; fi
  local left=$(( budget - 8 - $(elapsed) ))
  if (( left < $2 * slow )); then echo "{\"skipped\": \"$1\", \"seconds_left\": $left}" > "$res/cases/$1.log"; echo "$1 skipped ($left s left)"; return 1; fi
  return 0
}

# 0. NCCL: the file PyTorch's libtorch_cuda loads, found the way the loader finds it.
timeout 30 python3 - > "$res/cases/nccl.log" 2>&1 <<'PY'
import glob, json, os, subprocess
r = {"file": None, "how": None}
try:
    import torch
    lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    site = os.path.dirname(os.path.dirname(torch.__file__))
    r["torch"] = torch.__version__
    try: r["torch_nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception as e: r["torch_nccl_version"] = f"unknown ({type(e).__name__})"
    tc = os.path.join(lib, "libtorch_cuda.so")
    if os.path.exists(tc):
        out = subprocess.run(["ldd", tc], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "libnccl" in line and "=>" in line:
                p = line.split("=>")[1].split("(")[0].strip()
                if os.path.isfile(p): r.update(file=p, how="ldd torch/lib/libtorch_cuda.so"); break
    for how, pattern in [("torch/lib", os.path.join(lib, "libnccl.so*")), ("nvidia/nccl wheel", os.path.join(site, "nvidia", "nccl", "lib", "libnccl.so*"))]:
        if r["file"] is None:
            hits = sorted(glob.glob(pattern))
            if hits: r.update(file=hits[0], how=how)
except ImportError:
    r["torch"] = None
if r["file"] is None:
    out = subprocess.run(["sh", "-c", "ldconfig -p 2>/dev/null | grep libnccl.so.2"], capture_output=True, text=True).stdout.split()
    if out and os.path.isfile(out[-1]): r.update(file=out[-1], how="ld.so.cache")
print(json.dumps(r))
PY
nccl_file=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("file") or "")' "$res/cases/nccl.log" 2>/dev/null)
[[ -n $nccl_file ]] && export QLORANET_NCCL_LIBRARY=$nccl_file
echo "nccl: ${nccl_file:-not found (the app searches itself)}"

# The 7B checkpoint (random weights, Llama-2 layout and tokenizer), counted in the budget.
if [[ $dry == 0 && ! -f $ckpt/config.json ]]; then
  t=$(date +%s)
  timeout -k 5 $(( budget / 2 )) python3 "$carry/make_random_llama.py" $ckpt --tokenizer models/tiny-llama-sotu/tokenizer.model > "$res/make7b.log" 2>&1
  echo "checkpoint 7B rc=$? $(( $(date +%s) - t ))s"
fi

# torchrun: PyTorch's module on the GPU machine. The CPU dry path sets what torchrun sets for its workers itself
# (a CPU machine's torchrun may be missing or too old): RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
# MASTER_PORT, and TORCHELASTIC_USE_AGENT_STORE=True (its store holds MASTER_PORT: our rendezvous takes the next).
torchrun=()
if [[ $dry == 1 ]]; then
  cat > "$res/torchrun-env.sh" <<'SH'
# --standalone --nproc_per_node N --no_python CMD...: N copies of CMD with torchrun's worker variables; fails if any fails.
n=$3; shift 4; port=$(( 20000 + RANDOM % 20000 )); pids=(); rc=0
for (( r = 0; r < n; r++ )); do
  RANK=$r LOCAL_RANK=$r WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 MASTER_PORT=$port TORCHELASTIC_USE_AGENT_STORE=True "$@" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
SH
  torchrun=(bash "$res/torchrun-env.sh")
elif python3 -c 'import torch.distributed.run' 2>/dev/null; then torchrun=(python3 -m torch.distributed.run)
elif command -v torchrun >/dev/null; then torchrun=(torchrun); fi

# 1. Collectives, 2. the 7B step on 1 and 2 GPUs at the same global batch, 3. what the budget leaves room for.
run_case selftest 60 "${app[@]}" dist-selftest --gpus 2 --backend $backend --bucket-kb 1024 --bench-mb $selftest_mb --bench-iters 20
bench=("${app[@]}" bench train --model $ckpt --device $device "${shape[@]}" --hold-seconds 0)
run_case bench-1 90 "${bench[@]}" --grad-accum 2
run_case bench-2 100 "${bench[@]}" --grad-accum 1 --gpus 2 "${prof[@]}"
optional bench-1-acc1 35 && run_case bench-1-acc1 60 "${bench[@]}" --grad-accum 1 "${prof[@]}"
optional bench-1-omp1 35 && run_case bench-1-omp1 60 env OMP_NUM_THREADS=1 "${bench[@]}" --grad-accum 1
if [[ $dry == 0 ]] && optional pair-1gpu 45; then
  printf -v one '%q ' "${bench[@]}"
  run_case pair-1gpu 70 bash -c "export OMP_NUM_THREADS=1; CUDA_VISIBLE_DEVICES=0 $one --grad-accum 1 & CUDA_VISIBLE_DEVICES=1 $one --grad-accum 1 & wait"
  # The same with each process on its own half of the cores (taskset): does the scheduler moving threads cost?
  half=$(( $(nproc) / 2 ))
  optional pair-1gpu-pinned 45 && command -v taskset >/dev/null && run_case pair-1gpu-pinned 70 bash -c \
    "export OMP_NUM_THREADS=1; CUDA_VISIBLE_DEVICES=0 taskset -c 0-$(( half - 1 )) $one --grad-accum 1 & CUDA_VISIBLE_DEVICES=1 taskset -c $half-$(( 2 * half - 1 )) $one --grad-accum 1 & wait"
fi
if [[ ${#torchrun[@]} -eq 0 ]]; then echo '{"skipped": "selftest-torchrun", "reason": "no torchrun"}' > "$res/cases/selftest-torchrun.log"
elif optional selftest-torchrun 25; then
  run_case selftest-torchrun 45 "${torchrun[@]}" --standalone --nproc_per_node 2 --no_python "${app[@]}" dist-selftest --backend $backend --bucket-kb 1024 --bench-mb $selftest_mb --bench-iters 20
fi
if optional train-equiv 40; then
  train=("${app[@]}" train configs/quickstart.yaml model.device=$device model.dtype=$dtype quantization.compute_dtype=$dtype
         data.max_seq_len=128 training.max_steps=8 training.eval_every=8 training.save_every=0 training.log_every=1)
  rm -rf "$res"/eq-*
  run_case eq-1 40 "${train[@]}" training.gradient_accumulation_steps=4 output.dir=$res/eq-1
  run_case eq-2 40 "${train[@]}" training.gradient_accumulation_steps=2 output.dir=$res/eq-2 --gpus 2
fi


# 4. The summary.
python3 - "$res" "$(elapsed)" "$budget" "$dry" <<'PY' | tee "$res/summary.json"
import csv, json, os, sys
res, seconds, budget, dry = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
def lines(name):
    try: return [json.loads(l) for l in open(f"{res}/cases/{name}.log") if l.startswith("{")]
    except (OSError, json.JSONDecodeError): return []
def case(name, keys):
    ls = lines(name)
    if not ls: return None
    if "skipped" in ls[0]: return {"skipped": True}
    m = next((l for l in ls if "measure" in l), {})
    r = next((l for l in reversed(ls) if "measure" not in l), {})
    d = {"rc": m.get("rc"), "wall_s": m.get("wall_s"), "gpu_peaks_gib": m.get("device_peaks_used_gib")}
    if m.get("timed_out"): d["timed_out_after_s"] = m.get("limit_s")
    d.update({k: r[k] for k in keys if k in r})
    if m.get("rc") not in (0, None):
        try: d["stderr_tail"] = open(f"{res}/cases/{name}.err").read()[-400:]
        except OSError: pass
    return d
nccl = (lines("nccl") or [{}])[0]
st = case("selftest", ["ok", "backend", "busbw_gbps", "allreduce_ms"])
bk = ["world_size", "grad_accum", "tokens_per_s", "tokens_per_s_per_gpu", "step_ms", "load_s", "adamw_path", "losses"]
b1, b2, b1a = case("bench-1", bk), case("bench-2", bk), case("bench-1-acc1", bk)
def speed(a, b):
    try: return round(a["tokens_per_s"] / b["tokens_per_s"], 3)
    except (TypeError, KeyError, ZeroDivisionError): return None
# Loss equality at the same global batch: step 0 has the same weights and data, so it should agree to the bit; later
# steps may drift by the nondeterministic CUDA kernels (atomics in attention's backward) within bf16 rounding.
TOL = 1e-2  # relative; bf16 unit roundoff 2^-8 = 3.9e-3 (on the CPU backend the runs agree exactly)
eq = None
if b1 and b2 and b1.get("losses") and b2.get("losses"):
    pairs = list(zip(b1["losses"], b2["losses"]))
    rel = [abs(a - b) / abs(a) if a else abs(b) for a, b in pairs]
    eq = {"steps": len(pairs), "exact_steps": sum(a == b for a, b in pairs), "first_step_exact": pairs[0][0] == pairs[0][1],
          "max_rel_diff": max(rel), "tolerance_rel": 0.0 if dry else TOL, "ok": max(rel) <= (0.0 if dry else TOL),
          "first_losses_1gpu": [round(x, 5) for x in b1["losses"][:3]], "first_losses_2gpu": [round(x, 5) for x in b2["losses"][:3]]}
for d in (b1, b2, b1a):
    if d and "losses" in d: d["loss_last"] = d.pop("losses")[-1]
PROFILE_KEYS = ("phases", "step_device_ms", "step_host_ms", "step_wall_ms", "between_steps_device_ms")
def profile(name):
    p = (case(name, ["profile"]) or {}).get("profile")
    if not p: return None
    return {k: p[k] for k in PROFILE_KEYS if k in p}
def rank_profiles(name):
    # The other ranks' profiles, from the case's stderr ("[rank N] rank N profile: {...}").
    out = {}
    try:
        for line in open(f"{res}/cases/{name}.err"):
            i = line.find("profile: {")
            if i >= 0 and "rank " in line:
                p = json.loads(line[i + len("profile: "):])
                r = line[:i].split("rank ")[-1].strip()
                out[f"rank{r}"] = {k: p[k] for k in PROFILE_KEYS if k in p}
    except (OSError, json.JSONDecodeError, ValueError): pass
    return out or None
def runs(name):
    # Every JSON result line of a case that ran several benches at once.
    return [{k: l.get(k) for k in ("tokens_per_s", "step_ms", "load_s")} for l in lines(name) if "tokens_per_s" in l and "measure" not in l]
def metrics(name):
    try: return {int(r["step"]): r for r in csv.DictReader(open(f"{res}/{name}/metrics.csv"))}
    except OSError: return {}
te = None
e1, e2 = case("eq-1", []), case("eq-2", [])
if e1 is not None:
    if e1.get("skipped"): te = {"skipped": True}
    else:
        m1, m2 = metrics("eq-1"), metrics("eq-2")
        diffs = []
        for s in sorted(m1):
            for k in ("loss", "val_loss"):
                a, b = m1[s].get(k), m2.get(s, {}).get(k)
                if a and b: diffs.append(abs(float(a) - float(b)) / max(abs(float(a)), 1e-30))
        tol = 0.0 if dry else TOL
        te = {"rc": [e1.get("rc"), (e2 or {}).get("rc")], "steps": len(m1), "steps_2gpu": len(m2), "compared": len(diffs),
              "max_rel_diff": max(diffs) if diffs else None, "tolerance_rel": tol,
              "ok": bool(diffs) and len(m1) == len(m2) and max(diffs) <= tol, "gpu_peaks_gib_2gpu": (e2 or {}).get("gpu_peaks_gib")}
s = {"summary": "issue-16 multi-gpu", "dry_cpu": dry, "seconds": seconds, "budget_s": budget,
     "gpus": [l.strip() for l in open(f"{res}/gpu.txt")] if not dry else None,
     "topo": [" ".join(l.split()) for l in open(f"{res}/topo.txt") if l.startswith(("\t", "GPU"))][:3] if not dry and os.path.exists(f"{res}/topo.txt") else None,
     "nccl": nccl, "selftest": st, "selftest_torchrun": case("selftest-torchrun", ["ok", "backend", "busbw_gbps"]),
     "bench_1gpu_acc2": b1, "bench_2gpu_acc1": b2, "bench_1gpu_acc1": b1a,
     "speedup_same_global_batch": speed(b2, b1), "speedup_same_per_gpu_work": speed(b2, b1a),
     "loss_equality_same_global_batch": eq, "train_equiv_tiny": te,
     "bench_1gpu_acc1_omp1": case("bench-1-omp1", bk), "pair_1gpu_independent": runs("pair-1gpu"),
     "pair_1gpu_independent_pinned": runs("pair-1gpu-pinned"),
     "profile_1gpu_acc1": profile("bench-1-acc1"), "profile_2gpu_acc1_rank0": profile("bench-2"),
     "profile_2gpu_acc1_other_ranks": rank_profiles("bench-2")}
v = s["speedup_same_per_gpu_work"]
s["target_1_9x_met"] = None if v is None else v >= 1.9
print(json.dumps(s, separators=(",", ":")))
PY
