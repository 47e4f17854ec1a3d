#!/usr/bin/env bash
# Proof of "the brief's command on a GPU, as typed" (README, Backends: the GPU as typed).
#
# The GPU machine has no .NET SDK and no network, so `dotnet run` cannot run there. What can run is the output of the
# DEFAULT build (`dotnet build`, TorchBackend=cpu: the CPU libtorch bundled in bin/.../libtorch/), started with
# `dotnet QLoraNet.dll train ...` and NO environment variables of ours: no LD_LIBRARY_PATH, no QLORANET_*; only the carried
# .NET runtime is put on PATH. The 500 MB bundled CPU libtorch cannot travel (64 MiB limit): its three libraries are
# replaced by SENTINELS with the same file names and SONAMEs whose constructor prints "SENTINEL" and exits 97, so the
# run fails loudly if anything loads the bundled copies instead of the machine's CUDA libtorch.
#
# What it proves: with the default build's layout, discovery finds PyTorch's CUDA libtorch on its own (site-packages
# or python3), checks it, loads it ahead of the bundled copies, and `train` runs on the GPU: the tiny model and a
# Llama-2-7B-shaped random checkpoint through configs/llama2-7b-sales.yaml itself (models/Llama-2-7b-hf links to it).
# What it does not prove: the SDK's part of `dotnet run` (restore, build) on that machine, and the fallback to the
# real bundled CPU libtorch there (CI runs that one on CPU: tests/QLoraNet.Tests/Cli/LibTorchStartupTests).
#
# Here (with the SDK), from the repo root:   bash scripts/gpu/prove_default_build.sh prepare [/work/main]
#   -> builds, then writes DEST/.gpu-product/ (app.tar.xz ~10 MB + this script); DEST defaults to this repo.
#   The lead also runs ../shared/gpu/pack.sh in DEST (the packed .NET runtime in .device/), then carries
#   .gpu-product and .device.
# On the GPU machine, from the repo root:      bash .gpu-product/prove_default_build.sh run
set -euo pipefail
mode=${1:-}
root=$(git rev-parse --show-toplevel 2>/dev/null || pwd)

prepare() {
  local dest=${1:-$root}
  cd "$root"
  dotnet build QLoraNet.csproj -v q -nologo 2>&1 | grep -E " error |rror\(s\)" || true
  local out=bin/Debug/net10.0 stage
  stage=$(mktemp -d)
  mkdir -p "$stage/app"
  # The default build's output as it is, minus other platforms' natives and the bundled CPU libtorch's big files.
  tar -C "$out" --exclude='./runtimes/win-*' --exclude='./runtimes/osx*' --exclude='./runtimes/linux-arm*' \
      --exclude='./runtimes/linux-musl*' --exclude='./runtimes/linux-loongarch64' --exclude='./runtimes/linux-riscv64' \
      --exclude='./libtorch' --exclude='*.pdb' -cf - . | tar -C "$stage/app" -xf -
  mkdir -p "$stage/app/libtorch"
  cp "$out"/libtorch/libgomp*.so* "$stage/app/libtorch/"
  for lib in libc10.so libtorch.so libtorch_cpu.so; do
    printf '#include <stdio.h>\n#include <unistd.h>\n__attribute__((constructor)) static void s(void){fprintf(stderr,"SENTINEL: the bundled CPU %s was loaded\\n");fflush(stderr);_exit(97);}\n' "$lib" > "$stage/s.c"
    gcc -shared -fPIC -Wl,-soname,"$lib" -o "$stage/app/libtorch/$lib" "$stage/s.c"
  done
  mkdir -p "$dest/.gpu-product"
  tar -C "$stage" -cf - app | xz -T2 -6 > "$dest/.gpu-product/app.tar.xz"
  cp "$root/scripts/gpu/prove_default_build.sh" "$dest/.gpu-product/"
  rm -rf "$stage"
  du -sh "$dest/.gpu-product"
  echo "carry: .gpu-product and .device (run ../shared/gpu/pack.sh in $dest for .device)"
}

run() {
  cd "$root"
  local here work=/tmp/qln-proof
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  rm -rf "$work"; mkdir -p "$work"
  tar -C "$work" -xJf "$here/app.tar.xz"
  if [[ ! -x /tmp/dotnet/dotnet ]]; then mkdir -p /tmp/dotnet && tar -xJf .device/dotnet-rt.tar.xz -C /tmp/dotnet; fi
  # Only .NET on PATH; nothing about libtorch is set (the machine's own environment stays as a user's shell has it).
  echo "machine environment: LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-(unset)}"
  local -a app=(env -u QLORANET_LIBTORCH DOTNET_ROOT=/tmp/dotnet PATH=/tmp/dotnet:$PATH dotnet "$work/app/QLoraNet.dll")
  echo "== info"
  "${app[@]}" info
  echo "== tiny model, device: cuda, 5 steps"
  "${app[@]}" train configs/quickstart.yaml model.device=cuda training.max_steps=5 training.log_every=1 "output.dir=$work/tiny"
  echo "== Llama-2-7B-shaped random checkpoint via configs/llama2-7b-sales.yaml, 3 steps"
  local ckpt=/tmp/llama7b
  [[ -f $ckpt/config.json ]] || python3 .device/make_random_llama.py "$ckpt" --tokenizer models/tiny-llama-sotu/tokenizer.model >/dev/null
  mkdir -p models; [[ -e models/Llama-2-7b-hf ]] || ln -s "$ckpt" models/Llama-2-7b-hf
  "${app[@]}" train configs/llama2-7b-sales.yaml training.max_steps=3 training.log_every=1 training.eval_every=0 "output.dir=$work/7b"
  echo "== proof done"
}

case "$mode" in
  prepare) shift; prepare "$@" ;;
  run) run ;;
  *) echo "usage: $0 prepare [DEST] | run" >&2; exit 2 ;;
esac
