"""The memory estimate rendered for the Model tab: numbers and a small HTML/CSS bar chart.

The arithmetic is `webui.memory_estimate`'s; this only draws weights / KV cache / overhead against the memory that
is free where the model will live (VRAM when layers go to the GPU, RAM otherwise), so a person sees at a
glance whether the chosen n_ctx or cache type fits before pressing Load.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from webui.errors import HearthError
from webui.memory_estimate import MemoryEstimate, available_memory, estimate
from webui.model_budget import gib


def _segment(css: str, part: int, scale: int, label: str) -> str:
    width = 100 * part / scale if scale else 0
    return (
        f'<span class="{css}" style="width:{width:.2f}%" title="{html.escape(label)}: {gib(part)}"></span>'
    )


def memory_html(est: MemoryEstimate, available: dict[str, int]) -> str:
    """The estimate as a legend with numbers, a bar scaled to max(total, free), and a fits/does-not line."""
    on_gpu = est.vram > 0
    free = available.get("vram_free", 0) if on_gpu else available.get("ram_available", 0)
    where = "free VRAM" if on_gpu else "available RAM"
    need = est.vram if on_gpu else est.total
    scale = max(est.total, free, 1)
    weights = est.weights_gpu + est.weights_cpu
    bar = "".join(
        [
            _segment("w", weights, scale, "weights"),
            _segment("kv", est.kv_cache, scale, "KV cache"),
            _segment("o", est.overhead, scale, "overhead"),
        ]
    )
    fits = need <= free if free else None
    verdict = (
        f"fits in {gib(free)} {where}"
        if fits
        else (f"does not fit: {gib(free)} {where}" if fits is False else f"{where} unknown")
    )
    legend = "".join(
        f'<span><i style="background:{color}"></i>{label} {gib(part)}</span>'
        for label, part, color in (
            ("weights", weights, "#4f7cff"),
            ("KV cache", est.kv_cache, "#f0a030"),
            ("overhead", est.overhead, "#9a6bd8"),
        )
    )
    return (
        f'<div id="memory-estimate" data-total="{est.total}" data-kv="{est.kv_cache}">'
        f"<b>Estimated memory: {gib(est.total)}</b>"
        + (f" ({gib(est.vram)} on GPU)" if on_gpu else "")
        + f" — {verdict}"
        f'<div class="hearth-membar">{bar}</div>'
        f'<div class="hearth-legend">{legend}</div></div>'
    )


def estimate_html(path: Path, loader: str, params: dict[str, Any]) -> str:
    """Estimate and render; an unreadable header or unsupported loader becomes a short message."""
    try:
        return memory_html(estimate(path, loader, params), available_memory())
    except (HearthError, ValueError, KeyError, OSError) as exc:
        return f'<div id="memory-estimate">Memory estimate unavailable: {html.escape(str(exc))}</div>'
