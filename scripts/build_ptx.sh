#!/usr/bin/env bash
# Builds the PTX of every CUDA kernel (src/Kernels/Cuda/*.cu, src/Quant/Kernels/*.cu) with clang, no CUDA toolkit
# needed. The .ptx files are committed and embedded into the assemblies, so users need only the NVIDIA driver,
# which compiles PTX for their GPU when a module is loaded (sm_80 PTX runs on Ampere, Ada and Hopper).
#   scripts/build_ptx.sh           rebuild every .ptx in place
#   scripts/build_ptx.sh --check   rebuild into a temp dir and fail if any committed .ptx differs
# Each .ptx starts with a line naming its source and the SHA-256 of the source and the shared header
# (qln_cuda.h); a unit test (PtxBuildTests) recomputes it, so a .cu edited without rebuilding fails CI even where
# clang is missing.
# Flags: -ffp-contract=off keeps every float mul/add a separately rounded .rn instruction (the kernels are held
# bit for bit to torch ops); +ptx70 enables the sm_80 instructions (bf16 conversion, shuffles with masks).
set -euo pipefail
cd "$(dirname "$0")/.."
clang=${CLANG:-clang-14}
header=src/Kernels/Cuda/qln_cuda.h
check=false; [[ "${1:-}" == "--check" ]] && check=true
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
status=0
shopt -s nullglob
for cu in src/Kernels/Cuda/*.cu src/Quant/Kernels/*.cu; do
  ptx=${cu%.cu}.ptx
  "$clang" -x cuda --cuda-device-only --cuda-gpu-arch=sm_80 -nocudainc -nocudalib -std=c++17 -O3 -ffp-contract=off \
    -Xclang -target-feature -Xclang +ptx70 -I src/Kernels/Cuda -S -o "$tmp/body.ptx" "$cu"
  hash=$(cat "$cu" "$header" | tr -d '\r' | sha256sum | cut -d' ' -f1)
  { echo "// qln-source: ${cu#src/} sha256 $hash (scripts/build_ptx.sh)"; cat "$tmp/body.ptx"; } > "$tmp/out.ptx"
  if $check; then
    if ! cmp -s "$tmp/out.ptx" "$ptx"; then echo "stale: $ptx (run scripts/build_ptx.sh)"; status=1; fi
  else
    mv "$tmp/out.ptx" "$ptx"; echo "built $ptx ($(grep -c '^.visible .entry' "$ptx") entries)"
  fi
done
exit $status
