"""Side-by-side timing for the benchmarks: both sides each round, the side that runs first alternating,
and every figure as min / median / max (the machines are shared and noisy)."""

from __future__ import annotations

import statistics
from collections.abc import Callable


def interleaved(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each side once per round, in turn; odd rounds run them in reverse order."""
    names = list(sides)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            results[name].append(sides[name]())
    return results


def spread(values: list[float], digits: int = 2) -> str:
    """'min / median / max' of `values`."""
    return " / ".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def report(label: str, ours: tuple[str, list[float]], theirs: tuple[str, list[float]], goal: float) -> str:
    """Both sides' tok/s and the per-round ratio ours / theirs, each as min / median / max."""
    ratios = [a / b for a, b in zip(ours[1], theirs[1], strict=True)]
    return (
        f"{label}\n  {theirs[0]}: {spread(theirs[1])} tok/s\n  {ours[0]}: {spread(ours[1])} tok/s\n"
        f"  ratio per round (min / median / max): {spread(ratios, 3)}  (goal >= {goal})"
    )


def without_extra_buffers() -> None:
    """Make every llama.cpp model in this process load without extra buffer types (weight repacking:
    AMX, interleaved Q4_0). For machines whose CPU advertises AMX that the virtual machine does not
    enable: there llama.cpp's AMX kernels die with 'Illegal instruction' on quantized weights. Both
    sides of a bench load their models the same way, so the comparison stays fair."""
    from llama_cpp import llama_cpp as capi

    default = capi.llama_model_default_params

    def params():  # noqa: ANN202 - a ctypes struct
        value = default()
        value.use_extra_bufts = False
        return value

    capi.llama_model_default_params = params
