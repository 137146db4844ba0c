"""The memory side of the model pool: the budget (``--memory-budget``) and what a model is estimated to take.

The estimate is `webui.memory_estimate`'s (the Model tab's); a remote model costs nothing here and a format
the estimate does not know counts its size on disk, as RAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webui.errors import HearthError
from webui.memory_estimate import GiB, MemoryEstimate, available_memory, estimate
from webui.models import LocalModel
from webui.remotes import PREFIX as REMOTE_PREFIX

NOTHING = MemoryEstimate(0, 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class Budget:
    """Bytes of RAM and VRAM models may use; None: not limited."""

    ram: int | None
    vram: int | None

    def describe(self) -> str:
        parts = [f"{gib(self.ram)} RAM" if self.ram is not None else "RAM not limited"]
        if self.vram is not None:
            parts.append(f"{gib(self.vram)} VRAM")
        return ", ".join(parts)


def parse_budget(text: str | None, available: dict[str, int] | None = None) -> Budget:
    """``--memory-budget``: ``auto`` (default: the RAM available and the VRAM free, as `available_memory` gives them),
    ``none`` (no memory limit), ``RAM`` or ``RAM,VRAM`` in GiB (``auto`` allowed for either part)."""
    text = (text or "auto").strip().lower()
    if text == "none":
        return Budget(None, None)
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 2:
        raise HearthError(f"--memory-budget {text!r}: expected auto, none, RAM or RAM,VRAM in GiB")
    avail = available if available is not None else available_memory()
    auto = (avail.get("ram_available") or None, avail.get("vram_free") or None)
    values: list[int | None] = []
    for i, part in enumerate(parts + ["auto"] * (2 - len(parts))):
        if part == "auto":
            values.append(auto[i])
            continue
        try:
            gib = float(part)
        except ValueError:
            raise HearthError(f"--memory-budget {text!r}: {part!r} is not a number of GiB") from None
        if gib <= 0:
            raise HearthError(f"--memory-budget {text!r}: a budget must be more than 0 GiB")
        values.append(int(gib * GiB))
    return Budget(values[0], values[1])


def too_large(need: MemoryEstimate, budget: Budget) -> bool:
    """Whether a model needing `need` is over the budget even alone."""
    return any(b is not None and n > b for n, b in ((need.ram, budget.ram), (need.vram, budget.vram)))


def shortfall(need: MemoryEstimate, held: list[MemoryEstimate], budget: Budget, max_models: int) -> str:
    """Why a model needing `need` does not fit beside the models holding `held`: over ``--max-models`` or
    over the budget; '' when it fits."""
    if max_models > 0 and len(held) + 1 > max_models:
        return f"{len(held)} models are loaded and --max-models is {max_models}"
    ram, vram = sum(e.ram for e in held) + need.ram, sum(e.vram for e in held) + need.vram
    if (budget.ram is None or ram <= budget.ram) and (budget.vram is None or vram <= budget.vram):
        return ""
    return (f"it needs about {gib(need.ram)} RAM and {gib(need.vram)} VRAM and the models in use take the rest "
            f"of the budget ({budget.describe()})")


def gib(n: float | None) -> str:
    """Bytes as GiB (MiB below a tenth of one); None as "?"."""
    return "?" if n is None else f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / (1 << 20):.1f} MiB"


def estimate_model(local: LocalModel, loader: str, params: dict[str, Any]) -> MemoryEstimate:
    """The memory estimate; a remote model costs nothing here, an unknown format its size on disk (RAM)."""
    if local.name.startswith(REMOTE_PREFIX):
        return NOTHING
    try:
        return estimate(local.path, loader, params)
    except Exception:  # noqa: BLE001 - a loader the estimate does not know: the files are a fair floor
        return MemoryEstimate(0, local.size_bytes, 0, 0, 0, local.size_bytes)
