"""Where a training writes, and how it reads back a checkpoint to resume.

A run writes into a hidden folder of loras/ (``.NAME.training-XXXX``) and renames it to ``loras/NAME`` when
it is complete, so a failure or a crash never leaves a half-written adapter under a name the LoRA selector
lists. Checkpoints live in ``loras/NAME/checkpoints/step-N/``: the adapter, ``optimizer.pt`` (AdamW and
scheduler state) and ``trainer_state.json`` (step, total, the loss log so far).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from webui.safe_files import UnsafeNameError, check_name
from webui.training.config import TrainingError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
_STEP = re.compile(r"step-(\d+)")


def adapter_name(name: str) -> str:
    """A name for loras/NAME: one plain file name (no separators, no leading dot)."""
    if not name.strip():
        raise TrainingError("name: give the adapter a name")
    try:
        return check_name(name, "adapter name")
    except UnsafeNameError as exc:
        raise TrainingError(str(exc)) from None


def steps_of(adapter: Path) -> list[int]:
    folder = adapter / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(
        int(m.group(1))
        for p in folder.iterdir()
        if (m := _STEP.fullmatch(p.name)) and (p / STATE_FILE).is_file()
    )


def resolve_checkpoint(loras_dir: Path, resume_from: str) -> Path:
    """``ADAPTER`` (its latest checkpoint) or ``ADAPTER/step-N``, inside loras/."""
    adapter, _, step = resume_from.strip().partition("/")
    adapter = adapter_name(adapter)
    folder = loras_dir / adapter
    steps = steps_of(folder)
    if not steps:
        raise TrainingError(f"resume_from: adapter {adapter!r} has no checkpoints in {loras_dir}")
    if not step:
        return folder / CHECKPOINTS / f"step-{steps[-1]}"
    match = _STEP.fullmatch(step)
    if not match or int(match.group(1)) not in steps:
        raise TrainingError(
            f"resume_from: {adapter!r} has no checkpoint {step!r} (it has step-{', step-'.join(map(str, steps))})"
        )
    return folder / CHECKPOINTS / step


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def new_work_dir(loras_dir: Path, name: str) -> Path:
    loras_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.training-", dir=loras_dir))


def save_checkpoint(
    work: Path, step: int, peft_model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]
) -> Path:
    import torch

    final = work / CHECKPOINTS / f"step-{step}"
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    peft_model.save_pretrained(str(partial))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, partial / OPTIMIZER_FILE
    )
    write_json(partial / STATE_FILE, state)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final


def load_checkpoint(checkpoint: Path, peft_model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Adapter weights, optimizer and scheduler state from `checkpoint`; returns its trainer state."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(
        str(checkpoint / "adapter_model.safetensors"), device=str(next(peft_model.parameters()).device)
    )
    try:
        set_peft_model_state_dict(peft_model, weights)
        states = torch.load(checkpoint / OPTIMIZER_FILE, weights_only=True)
        optimizer.load_state_dict(states["optimizer"])
        scheduler.load_state_dict(states["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise TrainingError(
            f"resume_from: {checkpoint} does not fit these settings (rank, target modules, model): {exc}"
        ) from None
    return read_state(checkpoint)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def move_into_place(work: Path, final: Path) -> None:
    """Rename the finished `work` folder to `final`, replacing an existing adapter only at the last moment."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
