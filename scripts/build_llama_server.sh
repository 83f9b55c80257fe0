#!/bin/sh
# Build llama.cpp's own `llama-server` (MIT) from the llama.cpp source that the pinned
# llama-cpp-python sdist vendors, with the wheel's AVX2 flags, into DEST (one static binary).
# The embedded backend runs it as a child process to decode several sequences together
# (synth/backends/llama_server.py). Called by `make install` when DEST is missing.
#
#   scripts/build_llama_server.sh PYTHON PACKAGE DEST "CMAKE ARGS"
#
# Only the llama-server target is built; no web UI (nothing is fetched at build time), no
# HTTPS, no tests. Sources and objects go to a temporary folder, removed afterwards.
set -eu
PYTHON=$1 PACKAGE=$2 DEST=$3 CMAKE_FLAGS=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
"$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$work" "$PACKAGE"
tar -xzf "$work"/*.tar.gz -C "$work"
src=$(echo "$work"/*/vendor/llama.cpp)
test -f "$src/tools/server/CMakeLists.txt" || { echo "build_llama_server: no tools/server in $src" >&2; exit 1; }
# shellcheck disable=SC2086  # the flags are several words
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release $CMAKE_FLAGS -DBUILD_SHARED_LIBS=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
	-DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF >"$work/cmake.log" \
	|| { tail -20 "$work/cmake.log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" >"$work/build.log" 2>&1 \
	|| { tail -30 "$work/build.log" >&2; exit 1; }
mkdir -p "$(dirname "$DEST")"
cp "$work/build/bin/llama-server" "$DEST.tmp"
"$DEST.tmp" --version >/dev/null 2>&1 || { echo "build_llama_server: the built binary does not run" >&2; rm -f "$DEST.tmp"; exit 1; }
mv "$DEST.tmp" "$DEST"
echo "llama-server built in $(( $(date +%s) - start )) s: $DEST"
