"""LoRA adapters on a loaded Transformers model, through PEFT (transformers' adapter integration).

Each adapter is loaded under its own name, scaled per layer (`LoraLayer.set_scale`: scale x alpha / r) and
activated together with the others; PEFT sums the active adapters' deltas. Removing deletes the adapters:
the wrapped layers then compute exactly their base layer, so the base model's logits come back bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webui.errors import HearthError, LoaderError
from webui.loras import check_peft_shapes, is_peft_folder, peft_config

log = logging.getLogger(__name__)


def _weight_shape(model: Any, module_name: str) -> tuple[int, ...] | None:
    """[out, in] of a linear layer, [rows, dim] of an embedding; None when `model` has no such module."""
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return None
    module = getattr(module, "base_layer", module)  # already wrapped by PEFT
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.out_features), int(module.in_features)
    if hasattr(module, "num_embeddings") and hasattr(module, "embedding_dim"):
        return int(module.num_embeddings), int(module.embedding_dim)
    return None


def check_adapters(model: Any, loras: Sequence[tuple[Path, float]]) -> None:
    """Every adapter is a PEFT LoRA folder that fits `model`; nothing is changed."""
    for path, _ in loras:
        if not is_peft_folder(path):
            raise LoaderError(
                f"LoRA {path.name}: the Transformers loader applies PEFT adapters (a folder with "
                "adapter_config.json); a .gguf adapter is for the llama.cpp loaders"
            )
        peft_config(path)
        check_peft_shapes(path, lambda name: _weight_shape(model, name))


def _remove(model: Any, names: Sequence[str]) -> None:
    if names:
        model.delete_adapter(list(names))


def _apply(model: Any, loras: Sequence[tuple[Path, float]]) -> list[str]:
    from peft.tuners.lora import LoraLayer

    names: list[str] = []
    try:
        for i, (path, scale) in enumerate(loras):
            name = f"hearth_lora_{i}"
            model.load_adapter(str(path), adapter_name=name, hotswap=False)
            names.append(name)
            for module in model.modules():
                if isinstance(module, LoraLayer):
                    module.set_scale(name, float(scale))
        if names:
            model.set_adapter(names)
    except Exception:
        _remove(model, names)
        raise
    return names


def set_peft_loras(
    model: Any,
    active: Sequence[str],
    previous: Sequence[tuple[Path, float]],
    loras: Sequence[tuple[Path, float]],
) -> list[str]:
    """Replace the adapters named `active` (applied from `previous`) with `loras`; returns the new names.
    A failure after the checks puts `previous` back before raising."""
    check_adapters(model, loras)
    _remove(model, active)
    try:
        return _apply(model, loras)
    except Exception as exc:
        try:
            _apply(model, previous)
        except Exception:  # the model is still the base model then; said in the log
            log.exception("could not re-apply the previous LoRAs")
        if isinstance(exc, HearthError):
            raise
        raise LoaderError(f"PEFT could not apply the LoRA(s): {exc}") from exc
