#!/usr/bin/env bash
# Hearth launcher: creates .venv and installs on first run, then starts the web UI.
# Usage: ./start.sh [flags]        (flags also read from CMD_FLAGS.txt; see ./start.sh --help)
#        ./start.sh --install-only (install or update, do not start)
set -euo pipefail
cd "$(dirname "$0")"

VENV=".venv"
MARKER="$VENV/.hearth-installed"
PYTHON="${PYTHON:-python3}"

install() {
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "Hearth needs Python 3.10 or newer (found: $("$PYTHON" --version 2>&1))." >&2
        exit 1
    fi
    [ -x "$VENV/bin/python" ] || { echo "Creating a virtual environment in $VENV ..."; "$PYTHON" -m venv "$VENV"; }
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    local target="."
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1 \
        && ! { command -v nvcc >/dev/null 2>&1 || [ -n "${CUDA_HOME:-}" ]; }; then
        echo "An NVIDIA GPU is present, but the CUDA toolkit (nvcc) is not: installing the CPU build."
        echo "Install the CUDA toolkit and delete $MARKER to get GPU support (llama.cpp with CUDA, ExLlamaV2, ExLlamaV3)."
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        echo "An NVIDIA GPU is present."
        local answer="${HEARTH_GPU:-}"
        if [ -z "$answer" ] && [ -t 0 ]; then
            read -r -p "Install GPU support (llama.cpp built with CUDA, ExLlamaV2 and ExLlamaV3)? [Y/n] " answer
        fi
        case "${answer:-y}" in
            [Nn]*) ;;
            *) export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_CUDA=on"; target=".[exllamav2,exllamav3]" ;;
        esac
    fi
    echo "Installing Hearth and its dependencies."
    echo "llama-cpp-python compiles llama.cpp from source: this takes several minutes (about 5 on 2 cores) the first time."
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}" \
        "$VENV/bin/python" -m pip install -e "$target"
    touch "$MARKER"
}

if [ ! -f "$MARKER" ] || [ pyproject.toml -nt "$MARKER" ]; then
    install
fi

if [ "${1:-}" = "--install-only" ]; then
    exit 0
fi
exec "$VENV/bin/python" -m webui "$@"
