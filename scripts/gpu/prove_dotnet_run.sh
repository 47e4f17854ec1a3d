#!/usr/bin/env bash
# Proof of issue 14 item 1 as the brief types it: on the GPU machine, from a fresh copy of the repository,
#     dotnet run -- train configs/llama2-7b-sales.yaml
# with the DEFAULT build (restore and build there, the bundled CPU libtorch included), no publish step and no
# environment variables of ours: runtime discovery must find PyTorch's CUDA libtorch on its own and train on the GPU.
#
# That machine has no .NET SDK and no network. scripts/gpu/prepare_sdk_carry.sh (here) packs the SDK and the
# default build's NuGet package closure into parts of <= 60 MiB; each device call carries one part and stashes it
# (--stash), the machine staying warm between calls; the last call (--run) checks the archives against the
# manifest, installs the SDK where Debian's package puts it (/usr/share/dotnet, `dotnet` on the default PATH) and the
# packages where NuGet keeps them (~/.nuget/packages), which is what a machine with .NET installed and an offline
# package cache has. Then, under `env -i` with only the default PATH and HOME:
#   1. a fresh copy of the repository (git clone when the tree came with its .git, else the tracked tree as it
#      travelled, minus the carry folders), with models/Llama-2-7b-hf linked to a random Llama-2-7B-shaped checkpoint
#      (make_random_llama.py, real layout and size; the real weights cannot travel);
#   2. `dotnet run -- train configs/llama2-7b-sales.yaml`, the config as it is, to its end (3 epochs of the sales
#      chats) or the time limit.
# Results: $OUT/prove_dotnet_run/ (train.log, summary.txt; the last lines printed are the summary).
#
# On the GPU machine, from the repository root:
#   bash scripts/gpu/prove_dotnet_run.sh --stash 00      # once per part, carry .gpu-sdk/parts/00 (then 01, ...)
#   bash scripts/gpu/prove_dotnet_run.sh --run [--limit 420] [--tool DIR-with-make_random_llama.py]
set -uo pipefail
mode=; part=; limit=420; tool=.gpu-speed
while [[ $# -gt 0 ]]; do
  case $1 in
    --stash) mode=stash; part=$2; shift 2 ;;
    --run) mode=run; shift ;;
    --limit) limit=$2; shift 2 ;;
    --tool) tool=$2; shift 2 ;;
    *) echo "unknown option $1 (--stash N | --run [--limit SECONDS] [--tool DIR])" >&2; exit 2 ;;
  esac
done
stash=$HOME/qln-sdk-parts
OUT=${OUT:-/tmp/qln-out}; res=$OUT/prove_dotnet_run; mkdir -p "$res"
summary() { echo "$*" | tee -a "$res/summary.txt"; }

if [[ $mode == stash ]]; then
  mkdir -p $stash && cp .gpu-sdk/parts/"$part"/part.* $stash/ || { echo "no .gpu-sdk/parts/$part (carry it)" >&2; exit 1; }
  echo "stashed part $part; now in $stash: $(ls $stash | tr '\n' ' ')($(du -sm $stash | cut -f1) MiB)"
  exit 0
fi
[[ $mode == run ]] || { echo "say --stash N or --run" >&2; exit 2; }
t0=$(date +%s)

# 1. The SDK and the package cache, checked against the manifest made where they were packed.
man=.gpu-sdk/manifest.txt
[[ -f $man ]] || { summary "FAIL: no $man (carry .gpu-sdk/manifest.txt)"; exit 1; }
read -r _ sdk_version < <(grep '^sdk ' $man)
read -r _ sdk_size sdk_sha < <(grep '^sdk.tar.xz ' $man)
read -r _ nuget_size nuget_sha < <(grep '^nuget.tar.xz ' $man)
cat $stash/part.* > /tmp/qln-all 2>/dev/null
have=$(stat -c %s /tmp/qln-all 2>/dev/null || echo 0)
(( have == sdk_size + nuget_size )) || { summary "FAIL: stashed parts hold $have bytes, the manifest $((sdk_size + nuget_size)): a part is missing ($(ls $stash 2>/dev/null | tr '\n' ' '))"; exit 1; }
head -c "$sdk_size" /tmp/qln-all > /tmp/sdk.tar.xz && tail -c +"$((sdk_size + 1))" /tmp/qln-all > /tmp/nuget.tar.xz && rm /tmp/qln-all
[[ $(sha256sum /tmp/sdk.tar.xz | cut -d' ' -f1) == "$sdk_sha" && $(sha256sum /tmp/nuget.tar.xz | cut -d' ' -f1) == "$nuget_sha" ]] \
  || { summary "FAIL: an archive does not match its SHA-256 in $man"; exit 1; }
if command -v dotnet > /dev/null; then summary "FAIL: this machine already has dotnet ($(command -v dotnet)): not the machine the proof is about"; exit 1; fi
mkdir -p /usr/share/dotnet "$HOME/.nuget" && tar -xJf /tmp/sdk.tar.xz -C /usr/share/dotnet && ln -sf /usr/share/dotnet/dotnet /usr/bin/dotnet
[[ -e $HOME/.nuget/packages ]] && { summary "FAIL: $HOME/.nuget/packages already exists"; exit 1; }
tar -xJf /tmp/nuget.tar.xz -C "$HOME/.nuget" && rm /tmp/sdk.tar.xz /tmp/nuget.tar.xz
summary "installed: .NET SDK $sdk_version in /usr/share/dotnet (dotnet on the default PATH), $(ls "$HOME/.nuget/packages" | wc -l) packages in $HOME/.nuget/packages ($(( $(date +%s) - t0 ))s)"

# 2. A fresh copy of the repository, and the checkpoint the config names.
fresh=/tmp/qln-fresh; rm -rf $fresh
if [[ -d .git ]]; then git clone -q . $fresh; how="git clone"
else mkdir -p $fresh && tar -cf - --exclude='./.gpu-*' --exclude='./bin' --exclude='./obj' --exclude='./runs' . | tar -xf - -C $fresh; how="copy of the tree as it travelled (no .git)"; fi
summary "fresh repository: $how, $(find $fresh -type f | wc -l) files, no bin/ or obj/: $([[ -e $fresh/bin || -e $fresh/obj ]] && echo NO || echo yes)"
ckpt=/tmp/llama7b
[[ -f $ckpt/config.json ]] || python3 "$tool/make_random_llama.py" $ckpt --tokenizer $fresh/models/tiny-llama-sotu/tokenizer.model > "$res/make7b.log" 2>&1 \
  || { summary "FAIL: make_random_llama.py (see make7b.log)"; exit 1; }
ln -s $ckpt $fresh/models/Llama-2-7b-hf

# 3. The brief's command, as typed, in a user's shell: the default PATH and HOME, nothing else.
cd $fresh
env -i "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "HOME=$HOME" env > "$res/environment.txt"
echo '$ dotnet run -- train configs/llama2-7b-sales.yaml' > "$res/train.log"
t=$(date +%s)
timeout "$limit" env -i "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "HOME=$HOME" \
  dotnet run -- train configs/llama2-7b-sales.yaml >> "$res/train.log" 2>&1
rc=$?
summary "dotnet run -- train configs/llama2-7b-sales.yaml: rc=$rc in $(( $(date +%s) - t ))s (limit $limit s)"
summary "  $(grep -m1 -E '^libtorch' "$res/train.log")"
grep -m3 -iE 'device|cuda' "$res/train.log" | sed 's/^/  /' | tee -a "$res/summary.txt"
tail -4 "$res/train.log" | sed 's/^/  /' | tee -a "$res/summary.txt"
[[ -f runs/llama2-7b-sales/metrics.csv ]] && { head -1 runs/llama2-7b-sales/metrics.csv; tail -2 runs/llama2-7b-sales/metrics.csv; } | cut -c1-240 | sed 's/^/  metrics: /' | tee -a "$res/summary.txt"
cp runs/llama2-7b-sales/metrics.csv "$res/" 2>/dev/null
summary "  outputs: $(cd runs/llama2-7b-sales 2>/dev/null && find . -maxdepth 2 | sort | head -30 | tr '\n' ' ')"
summary "total $(( $(date +%s) - t0 ))s"
exit $rc
