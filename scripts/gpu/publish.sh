#!/usr/bin/env bash
# Prepare .device/ for the GPU machine: the packed .NET runtime (../shared/gpu/pack.sh) and our CLI published
# framework-dependent for linux-x64 with the `system` backend (no bundled libtorch: the GPU machine's CUDA
# libtorch from PyTorch is used through LD_LIBRARY_PATH, set by .device/env.sh).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if [[ -x ../shared/gpu/pack.sh ]]; then ../shared/gpu/pack.sh; fi
rm -rf .device/app
dotnet publish QLoraNet.csproj -c Release -r linux-x64 --self-contained false -p:TorchBackend=system -o .device/app 2>&1 | grep -E "error|->" || true
# The GPU runs need no plotting natives or debug symbols; keep what travels under the 64 MiB limit.
rm -f .device/app/*.pdb .device/app/libSkiaSharp.so .device/app/libHarfBuzzSharp.so
du -sh .device/app .device
