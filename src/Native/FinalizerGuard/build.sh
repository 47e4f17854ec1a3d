#!/usr/bin/env bash
# Builds linux-x64/libQLoraNetFinalizerGuard.so from finalizer_guard.c (committed, so that neither users nor CI need
# a C compiler). It is linked against a stub named libLibTorchSharp.so only to record that DT_NEEDED entry: at run
# time the loader binds it to the libLibTorchSharp.so QLoraNet.Native has already loaded (same SONAME).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cc=${CC:-cc}
echo 'void qln_stub(void) {}' > "$tmp/stub.c"
"$cc" -shared -fPIC -o "$tmp/libLibTorchSharp.so" -Wl,-soname,libLibTorchSharp.so "$tmp/stub.c"
mkdir -p "$here/linux-x64"
"$cc" -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror \
    -Wl,-soname,libQLoraNetFinalizerGuard.so -Wl,--build-id=none -Wl,-z,noexecstack \
    -o "$here/linux-x64/libQLoraNetFinalizerGuard.so" "$here/finalizer_guard.c" \
    -Wl,--no-as-needed -L"$tmp" -lLibTorchSharp -lpthread
strip --strip-unneeded "$here/linux-x64/libQLoraNetFinalizerGuard.so"
echo "built $here/linux-x64/libQLoraNetFinalizerGuard.so"
