#!/usr/bin/env bash
# The product as a .NET developer gets it (issue 14), checked on CPU from this checkout:
#   1. dotnet pack: the library packages (src/*, the facade "QLoraNet") and the tool "QLoraNet.Cli" into artifacts/
#   2. dotnet tool install from that folder (a tool path, not --global, to leave the machine alone); `qloranet --help`
#      and a one-step training of the tiny model with the installed tool
#   3. samples/FineTuneFromCode and samples/ChatClient restored from that folder, built and run: a 2-step fine-tune from
#      C#, then a streamed IChatClient answer over the adapter it wrote
# Each pack gets its own prerelease version (0.1.0-check.N), so a package cache never serves an older pack.
# Prints one line per check and ends with "package check: N passed, N failed". Usage: bash scripts/package_check.sh
set -uo pipefail
cd "$(git rev-parse --show-toplevel)"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
suffix=${QLN_PACK_SUFFIX:-check.$(date +%s)}; version=0.1.0-$suffix
passed=0; failed=0
check() {   # check NAME CMD...: runs CMD (output in $work/NAME.log); prints ok/FAIL with the log's tail
  local name=$1; shift
  if "$@" > "$work/$name.log" 2>&1; then echo "ok    $name"; passed=$((passed + 1)); return 0; fi
  echo "FAIL  $name"; tail -15 "$work/$name.log" | sed 's/^/      /'; failed=$((failed + 1)); return 1
}
has() { grep -q -- "$2" "$work/$1.log" || { echo "FAIL  $1: no '$2' in its output"; passed=$((passed - 1)); failed=$((failed + 1)); }; }
lacks() { ! grep -q -- "$2" "$work/$1.log" || { echo "FAIL  $1: '$(grep -m1 -- "$2" "$work/$1.log")'"; passed=$((passed - 1)); failed=$((failed + 1)); }; }

# QLN_PACK_SUFFIX=S QLN_NO_PACK=1: reuse artifacts/ packed with that suffix (development only).
[[ -z ${QLN_NO_PACK:-} ]] && rm -rf artifacts && check pack dotnet pack QLoraNet.sln -c Release -o artifacts --version-suffix "$suffix" -nologo -v q
ls artifacts/*.nupkg 2>/dev/null | sed 's|^|      |'
for id in QLoraNet QLoraNet.Cli QLoraNet.Native QLoraNet.Training QLoraNet.Models QLoraNet.Peft QLoraNet.Quant QLoraNet.Formats QLoraNet.Kernels QLoraNet.Evaluation QLoraNet.Distributed; do
  [[ -f artifacts/$id.$version.nupkg ]] || { echo "FAIL  package $id.$version.nupkg missing"; failed=$((failed + 1)); }
done
# Each library package: its readme and XML documentation inside. A .nupkg is a zip; python3's zipfile lists it
# (CI machines have python3, which .ci/run already uses, but not always unzip).
for p in artifacts/QLoraNet.$version.nupkg artifacts/QLoraNet.Training.$version.nupkg; do
  [[ -f $p ]] && { listing=$(python3 -m zipfile -l "$p") && grep -q "README.md" <<< "$listing" \
                   && grep -q "lib/net10.0/.*\.xml" <<< "$listing"; } \
    || { echo "FAIL  ${p##*/}: no README.md or XML docs"; failed=$((failed + 1)); }
done

tools=$work/tools
check tool-install dotnet tool install QLoraNet.Cli --tool-path "$tools" --add-source artifacts --version "$version"
check tool-help "$tools/qloranet" --help && has tool-help "train"
check tool-train "$tools/qloranet" train configs/quickstart.yaml training.max_steps=1 training.eval_every=0 training.save_every=0 \
  "output.dir=$work/tool-run" && has tool-train "libtorch" && lacks tool-train "finalizer guard"

export QLoraNetVersion=$version
# The samples take libtorch from the NuGet cache like any app; hard links instead of two 600 MB copies keep the check
# within a small CI disk (the repo's own projects get the same from Directory.Build.props).
link=-p:CreateHardLinksForCopyLocalIfPossible=true
check sample-finetune dotnet run --project samples/FineTuneFromCode -c Release -p:QLoraNetVersion=$version $link -- 2 "$work/sample-run" \
  && has sample-finetune "adapter:" && lacks sample-finetune "finalizer guard"
check sample-chat dotnet run --project samples/ChatClient -c Release -p:QLoraNetVersion=$version $link -- "$work/sample-run/final" \
  && has sample-chat ">"
echo "package check: $passed passed, $failed failed"
(( failed == 0 ))
