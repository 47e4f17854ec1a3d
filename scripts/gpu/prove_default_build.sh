#!/usr/bin/env bash
# Proof of issue 14 item 1, "the brief's command on a GPU, as typed" (README, Backends: the GPU as typed).
#
# The GPU machine has no .NET SDK and no network, so `dotnet run` cannot run there. What runs is the output of the
# DEFAULT build (TorchBackend=cpu, the CPU libtorch bundled in libtorch/ beside the app) as scripts/gpu/prepare_speed.sh
# puts it in the carry folder (.gpu-speed/app.tar.xz, the same app bench_speed.sh runs), started with
# `dotnet QLoraNet.dll train ...` and NO environment of ours: env -i with only PATH/HOME and the carried .NET runtime;
# no LD_LIBRARY_PATH, no QLORANET_*, no TORCH_LIB. The 500 MB bundled CPU libtorch cannot travel (64 MiB limit):
# prepare_speed.sh replaced its libraries by SENTINELS with the same file names and SONAMEs whose constructor prints
# "SENTINEL" and exits 97, so the run fails loudly if anything loads the bundled copies instead of the machine's CUDA
# libtorch.
#
# What it proves: with the default build's layout, discovery finds PyTorch's CUDA libtorch on its own (site-packages or
# python3), checks it, loads it ahead of the bundled copies, says so in its start line, and `train` runs on the GPU:
# the tiny model, then configs/llama2-7b-sales.yaml itself on a Llama-2-7B-shaped random checkpoint
# (models/Llama-2-7b-hf links to /tmp/llama7b, which bench_speed.sh makes; built here only if absent and time allows).
# What it does not prove: the SDK's part of `dotnet run` (restore, build) on that machine (scripts/gpu/prove_dotnet_run.sh
# does), and the fallback to the real bundled CPU libtorch there (CI runs that one on CPU: tests/QLoraNet.Tests/Cli/LibTorchStartupTests).
#
# On the GPU machine, from the repository root:  bash scripts/gpu/prove_default_build.sh [--carry .gpu-speed] [--budget 90]
# Here, without a GPU (checks the carry and the script's plumbing, runs nothing heavy):
#   bash scripts/gpu/prove_default_build.sh --dry
# Results: $OUT/prove_default_build/ (one log per case, summary.txt); the last lines printed are the summary.
set -uo pipefail
carry=.gpu-speed; budget=90; dry=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --carry) carry=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --dry) dry=1; shift ;;
    *) echo "unknown option $1 (--carry DIR, --budget SECONDS, --dry)" >&2; exit 2 ;;
  esac
done
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
OUT=${OUT:-/tmp/qln-out}; res=$OUT/prove_default_build; mkdir -p "$res"
t0=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t0) )); }
summary() { echo "$*" | tee -a "$res/summary.txt"; }

for f in app.tar.xz dotnet-rt.tar.xz; do [[ -f $carry/$f ]] || { echo "no $carry/$f: run scripts/gpu/prepare_speed.sh first" >&2; exit 1; }; done
appdir=/tmp/qln-app dotnetdir=/tmp/dotnet
if (( dry )); then scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT; appdir=$scratch/app dotnetdir=$scratch/dotnet; fi
if [[ ! -f $appdir/QLoraNet.dll ]]; then mkdir -p $appdir && tar -xJf "$carry/app.tar.xz" -C $appdir; fi
if [[ ! -x $dotnetdir/dotnet ]]; then mkdir -p $dotnetdir && tar -xJf "$carry/dotnet-rt.tar.xz" -C $dotnetdir; fi

# The app must be the default build with sentinels, or the proof proves nothing.
grep -q SENTINEL $appdir/libtorch/libtorch_cpu.so 2>/dev/null || { summary "FAIL: $appdir/libtorch/libtorch_cpu.so is not a sentinel (not prepare_speed.sh's default build)"; exit 1; }
if compgen -G "$appdir/libtorch*.so*" > /dev/null; then summary "FAIL: $appdir holds libtorch in its native directory"; exit 1; fi

# A user's shell, minus anything of ours: only PATH (with .NET first) and HOME.
clean=(env -i "PATH=$dotnetdir:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "HOME=${HOME:-/root}" DOTNET_ROOT=$dotnetdir
       DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)
app=("${clean[@]}" dotnet $appdir/QLoraNet.dll)
echo "machine environment (not passed on): LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-(unset)}" > "$res/environment.txt"
"${clean[@]}" env >> "$res/environment.txt"

# case NAME SECONDS CMD...: runs under timeout (at most what the budget has left); summary line with the start line.
case_() {
  local name=$1 limit=$2; shift 2
  local l; l=$(left); (( limit > l )) && limit=$l
  if (( limit < 5 )); then summary "$name: SKIPPED (budget spent)"; return 1; fi
  local t=$(date +%s)
  timeout "$limit" "$@" > "$res/$name.log" 2>&1
  local rc=$?
  local loaded; loaded=$(grep -m1 -E "^libtorch" "$res/$name.log")
  summary "$name: rc=$rc $(( $(date +%s) - t ))s | ${loaded:-(no libtorch line)}"
  grep -m1 SENTINEL "$res/$name.log" | sed 's/^/    /' | tee -a "$res/summary.txt"
  (( rc != 0 )) && tail -3 "$res/$name.log" | sed 's/^/    /' | tee -a "$res/summary.txt"
  return $rc
}

if (( dry )); then
  # Here: the same clean environment on CPU. The sentinels make the bundled fallback exit 97, which is what this
  # machine (no GPU driver) must do: it shows that the app would load libtorch/ only as the fallback.
  case_ dry-info 60 "${app[@]}" info
  rc=$?
  grep -q "SENTINEL" "$res/dry-info.log" && summary "dry: OK (no GPU here: the fallback reached the sentinel bundled libtorch, rc=$rc)" \
    || summary "dry: UNEXPECTED (rc=$rc, no sentinel line)"
  exit 0
fi

case_ info 20 "${app[@]}" info
case_ tiny-cuda 30 "${app[@]}" train configs/quickstart.yaml model.device=cuda training.max_steps=5 training.log_every=1 \
  training.eval_every=0 training.save_every=0 "output.dir=/tmp/qln-proof/tiny"
ckpt=/tmp/llama7b
if [[ ! -f $ckpt/config.json ]] && (( $(left) > 60 )); then
  timeout $(( $(left) - 40 )) python3 "$carry/make_random_llama.py" $ckpt --tokenizer models/tiny-llama-sotu/tokenizer.model > "$res/make7b.log" 2>&1
fi
if [[ -f $ckpt/config.json ]]; then
  mkdir -p models; [[ -e models/Llama-2-7b-hf ]] || ln -s $ckpt models/Llama-2-7b-hf
  # The brief's config as it is; only the run is cut short (2 optimizer steps of 4 sequences) and kept out of runs/.
  case_ llama2-7b-sales 60 "${app[@]}" train configs/llama2-7b-sales.yaml training.max_steps=2 training.gradient_accumulation_steps=1 \
    training.log_every=1 training.eval_every=0 training.save_every=0 "output.dir=/tmp/qln-proof/7b"
else
  summary "llama2-7b-sales: SKIPPED (no $ckpt and no time to make it)"
fi
summary "total $(( $(date +%s) - t0 ))s of $budget s"
