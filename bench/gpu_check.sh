#!/usr/bin/env bash
# Every CUDA path of Hearth on a real NVIDIA GPU, in under 10 minutes, ending in one summary table.
#
#   bash bench/gpu_check.sh            (from the repository root, with .venv set up)
#   WHEELS=/path/to/wheels bash bench/gpu_check.sh   (offline: pip installs from that folder only)
#
# Installs the CUDA build of llama-cpp-python and the exllamav2 / exllamav3 extras (each time-boxed; a failed
# install skips that library's checks with a line saying so), then runs bench/gpu_check.py for what remains
# of the budget. Without a GPU it stops at once: nothing is installed or built.
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-570}
PY=${PYTHON:-.venv/bin/python}

no_gpu() {
    echo "gpu_check: no NVIDIA GPU here ($1); this script checks the CUDA paths and needs one. Nothing was installed." >&2
    exit 2
}
case "${CUDA_VISIBLE_DEVICES-unset}" in
    "" | "-1") no_gpu "CUDA_VISIBLE_DEVICES hides every device" ;;
esac
command -v nvidia-smi >/dev/null 2>&1 || no_gpu "nvidia-smi is not installed"
GPUS=$(timeout 20 nvidia-smi -L 2>/dev/null) || no_gpu "nvidia-smi fails"
[ -n "$GPUS" ] || no_gpu "nvidia-smi lists no device"
echo "gpu_check: $GPUS"

left() { echo $((BUDGET - ($(date +%s) - START))); }
PIP=("$PY" -m pip install --disable-pip-version-check -q)
[ -n "${WHEELS:-}" ] && PIP+=(--no-index --find-links "$WHEELS")
SKIPPED=()

install() {  # install NAME SECONDS ARGS...: one time-boxed pip install; a failure is reported, not fatal
    local name=$1 seconds=$2
    shift 2
    local t0
    t0=$(date +%s)
    if timeout "$seconds" "$@" >"/tmp/gpu_check_$name.log" 2>&1; then
        echo "gpu_check: installed $name ($(($(date +%s) - t0)) s)"
    else
        echo "gpu_check: SKIP $name: install failed or timed out after $(($(date +%s) - t0)) s (see /tmp/gpu_check_$name.log)"
        SKIPPED+=("$name")
    fi
}

# llama.cpp with CUDA: --no-deps keeps the venv's numpy and friends as they are
install llama-cpp-cuda 240 env CMAKE_ARGS="-DGGML_CUDA=on" "${PIP[@]}" --force-reinstall --no-cache-dir --no-deps llama-cpp-python==0.3.36
install exllamav2 90 "${PIP[@]}" "exllamav2==0.3.2"
install exllamav3 90 "${PIP[@]}" "exllamav3==1.6.5"

REMAINING=$(left)
if [ "$REMAINING" -lt 60 ]; then
    echo "gpu_check: only ${REMAINING} s left after the installs; not enough for the checks" >&2
    exit 3
fi
SKIP_ARGS=()
for name in "${SKIPPED[@]}"; do SKIP_ARGS+=(--skip "$name"); done
exec timeout --kill-after=10 "$((REMAINING - 5))" "$PY" bench/gpu_check.py --budget "$((REMAINING - 15))" "${SKIP_ARGS[@]}"
