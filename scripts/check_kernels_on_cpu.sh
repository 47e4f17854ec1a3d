#!/usr/bin/env bash
# Runs every CUDA kernel on the CPU (tests/KernelsOnCpu: the .cu compiled as C++ with emulated threads, barriers
# and shuffles) against scalar loops: a check of indexing, layout and control flow that needs no GPU. The GPU
# parity of the real PTX against torch is `bench kernel`.
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${CXX:-clang++-14}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
status=0
for src in tests/KernelsOnCpu/check_*.cpp; do
  name=$(basename "$src" .cpp)
  "$cxx" -std=c++20 -O1 -ffp-contract=off -pthread -DQLN_HOST -I tests/KernelsOnCpu -I src/Kernels/Cuda -I src/Quant/Kernels \
    -o "$out/$name" "$src"
  echo "== $name"
  "$out/$name" > "$out/$name.log" || status=1
  grep -v "^ok" "$out/$name.log" || true
done
exit $status
