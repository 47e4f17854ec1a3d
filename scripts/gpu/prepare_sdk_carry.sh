#!/usr/bin/env bash
# Packs what `dotnet run` needs on a machine with no .NET SDK and no network (the GPU machine), for the proof of
# issue 14 item 1 in its literal form: scripts/gpu/prove_dotnet_run.sh runs `dotnet run -- train
# configs/llama2-7b-sales.yaml` there from a fresh copy of the repository, restore and build included.
#
# Two archives, then split into parts small enough to travel one per device call (each call carries at most
# 64 MiB with the working tree; a call from an empty checkout carries a whole part):
#   sdk.tar.xz  this machine's .NET SDK, without what a C# console build never reads (F#, the global tools
#               dotnet-watch/format, the .NET Framework test host, the ASP.NET runtime, templates, the satellite
#               assemblies of translated messages). The ASP.NET targeting pack stays: the .NET 10 SDK reads it to prune packages.
#   nuget.tar.xz the default build's package closure as a global packages folder (~/.nuget/packages), restored
#               here from nuget.org into an empty folder; the .nupkg archives are dropped (restore only needs the
#               extracted files and the .nupkg.sha512 marker beside them).
# Output: .gpu-sdk/parts/<n>/part.<n> (git-ignored through /.gpu-*/ in .git/info/exclude) and
# .gpu-sdk/manifest.txt (sizes and SHA-256 of both archives), which prove_dotnet_run.sh checks before unpacking.
#
# Usage, from the repository root:  bash scripts/gpu/prepare_sdk_carry.sh [--part-mib 60]
set -euo pipefail
part_mib=60
while [[ $# -gt 0 ]]; do
  case $1 in
    --part-mib) part_mib=$2; shift 2 ;;
    *) echo "unknown option $1 (--part-mib N)" >&2; exit 2 ;;
  esac
done
root=$(git rev-parse --show-toplevel); cd "$root"
grep -qx '/.gpu-\*/' .git/info/exclude 2>/dev/null || echo '/.gpu-*/' >> .git/info/exclude
out=.gpu-sdk; rm -rf "$out"; mkdir -p "$out/parts"
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT

echo "restoring the default build's package closure into an empty folder (from a clean clone of HEAD)..."
git clone -q "$root" "$scratch/clone"
(cd "$scratch/clone" && NUGET_PACKAGES="$scratch/packages" dotnet restore QLoraNet.csproj -v q)
find "$scratch/packages" -name '*.nupkg' -delete
tar -cf - -C "$scratch" packages | xz -9 -T2 > "$out/nuget.tar.xz"

echo "packing the .NET SDK..."
dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
sdk=$(dotnet --version)
exclude=(--exclude="sdk/$sdk/FSharp" --exclude="sdk/$sdk/DotnetTools" --exclude="sdk/$sdk/TestHostNetFramework"
         --exclude='shared/Microsoft.AspNetCore.App' --exclude='templates')
exclude+=(--exclude='*.resources.dll')   # satellite assemblies: translated messages; English is built in
tar -cf - -C "$dotnet_root" "${exclude[@]}" dotnet host sdk sdk-manifests packs shared LICENSE.txt | xz -9 -T2 > "$out/sdk.tar.xz"

{ echo "sdk $sdk"
  for f in sdk.tar.xz nuget.tar.xz; do echo "$f $(stat -c %s "$out/$f") $(sha256sum "$out/$f" | cut -d' ' -f1)"; done; } > "$out/manifest.txt"
cat "$out/sdk.tar.xz" "$out/nuget.tar.xz" | split -b "${part_mib}M" -d -a 2 - "$scratch/part."
for p in "$scratch"/part.*; do n=${p##*.}; mkdir -p "$out/parts/$n"; mv "$p" "$out/parts/$n/"; done
rm "$out/sdk.tar.xz" "$out/nuget.tar.xz"
cat "$out/manifest.txt"
echo "parts (one per device call, carry .gpu-sdk/parts/<n>; the last call also carries .gpu-sdk/manifest.txt):"
du -sm "$out"/parts/* | sed 's/^/  /'
