"""LoRA adapters on ExLlamaV2: PEFT folders loaded with `ExLlamaV2Lora.from_directory` and passed as ``loras=``
to every ``forward`` (exllamav2 0.3.2 keeps each adapter's tensors beside the base layers and applies only the
ones named in a call), so the base weights never change and no adapter gives the base model back exactly.

Written against exllamav2 0.3.2's source: ``exllamav2/lora.py`` (``from_directory(model, directory,
lora_scaling = 1.0)``, ``__init__`` looking targets up in ``model.modules_dict``, ``unload``) and
``exllamav2/linear.py`` (``forward_tp`` / ``forward_tp_row`` accept ``loras=`` and ignore it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.errors import LoaderError
from webui.loras import PEFT_WEIGHTS, check_peft_shapes, is_peft_folder, peft_config


@dataclass(frozen=True, eq=False)
class LoadedAdapter:
    """One loaded adapter (an ExLlamaV2Lora, or exllamav3's LoRA) and what it was made from: a new scale or a
    rewritten file loads it again (both libraries multiply the scale into lora_B's tensors when they load)."""

    path: str
    mtime: float
    scale: float
    lora: Any

    @property
    def key(self) -> tuple[str, float, float]:
        return self.path, self.mtime, self.scale


def adapter_key(path: Path, scale: float) -> tuple[str, float, float]:
    weights = next((path / w for w in PEFT_WEIGHTS if (path / w).is_file()), path)
    try:
        mtime = weights.stat().st_mtime
    except OSError:
        mtime = 0.0
    return str(path.resolve()), mtime, scale


def check_peft_folder(path: Path, engine: str) -> None:
    """LoaderError unless `path` is a readable PEFT LoRA folder (`engine`, "ExLlamaV2" or "ExLlamaV3", loads
    no GGUF adapters)."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        raise LoaderError(f"LoRA {path.name}: {engine} cannot apply GGUF LoRA adapters; it loads PEFT adapter "
                          "folders (adapter_config.json + adapter_model.safetensors or .bin)")
    if not is_peft_folder(path):
        raise LoaderError(f"LoRA {path.name}: not a PEFT adapter folder (adapter_config.json + "
                          "adapter_model.safetensors or .bin)")
    peft_config(path)  # a LoRA, readable


def check_module_shapes(modules: dict[str, Any], path: Path) -> None:
    """LoaderError unless every target of the adapter at `path` fits a Linear of `modules` (key -> module):
    both ExLlamas look targets up in `model.modules_dict` by the PEFT key and compare lora_A's shape[1]
    with in_features, lora_B's shape[0] with out_features."""

    def base_shape(name: str) -> tuple[int, ...] | None:
        module = modules.get(name)
        if module is None or not hasattr(module, "in_features") or not hasattr(module, "out_features"):
            return None
        return int(module.out_features), int(module.in_features)

    check_peft_shapes(path, base_shape)


def check_adapter(model: Any, path: Path) -> None:
    """LoaderError unless `path` is a PEFT LoRA folder whose every target fits a layer of `model`."""
    check_peft_folder(path, "ExLlamaV2")
    check_module_shapes(getattr(model, "modules_dict", {}), path)


def load_adapter(model: Any, path: Path, scale: float) -> Any:
    from exllamav2 import ExLlamaV2Lora

    try:
        return ExLlamaV2Lora.from_directory(model, str(path), lora_scaling=scale)
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
        raise LoaderError(f"LoRA {path.name}: ExLlamaV2 could not load it: {exc}") from exc
    except (AssertionError, ValueError, KeyError, TypeError, OSError) as exc:
        # AssertionError: models with an FP32 residual stream; ValueError: fan_in_fan_out, a bias, an
        # unsupported layer or dtype; KeyError: adapter_config.json without r / lora_alpha
        reason = str(exc).strip().removeprefix("## Error:").strip() or type(exc).__name__
        raise LoaderError(f"LoRA {path.name}: ExLlamaV2 cannot apply it ({reason})") from exc


def swap_adapters(current: Sequence[LoadedAdapter], loras: Sequence[tuple[Path, float]], wanted: Sequence[tuple[str, float, float]],
                  load: Callable[[Path, float], Any]) -> list[LoadedAdapter]:
    """The adapters for `loras` (`wanted` their keys): those of `current` with the same key are kept, the others
    loaded with `load(path, scale)`, and only then are the adapters no longer wanted unloaded; a failed load
    unloads what this call loaded and leaves `current` as it was. For ExLlamaV2 and ExLlamaV3, whose adapters
    both have `.lora.unload()`."""
    loaded = {a.key: a for a in current}
    fresh: list[LoadedAdapter] = []
    try:
        for (path, scale), key in zip(loras, wanted, strict=True):
            if key not in loaded:
                loaded[key] = LoadedAdapter(*key, lora=load(Path(path), float(scale)))
                fresh.append(loaded[key])
    except LoaderError:
        for adapter in fresh:
            adapter.lora.unload()
        raise
    applied = [loaded[key] for key in wanted]
    for adapter in current:
        if all(adapter is not a for a in applied):
            adapter.lora.unload()  # removes its tensors from the layers
    return applied


class ExLlamaV2Adapters:
    """The adapters applied to one ExLlamaV2 model."""

    def __init__(self) -> None:
        self._adapters: list[LoadedAdapter] = []

    def forward_arg(self) -> list[Any] | None:
        """The `loras=` argument of every forward: None, not [], without adapters. exllamav2 0.3.2 reads
        `loras[0]` whenever loras is not None (ExLlamaV2Embedding.forward, exllamav2/embedding.py, and
        ExLlamaV2Linear.forward for lm_head, exllamav2/linear.py), so an empty list raises IndexError."""
        return [adapter.lora for adapter in self._adapters] or None

    def apply(self, model: Any, loras: Sequence[tuple[Path, float]]) -> bool:
        """Make `loras` the applied set; returns whether it changed (the caller then empties its caches).

        Adapters already loaded with the same file and scale are kept; new ones are loaded before any old one
        is dropped, so a failure leaves the model as it was."""
        wanted = [adapter_key(Path(path), float(scale)) for path, scale in loras]
        if wanted == [a.key for a in self._adapters]:
            return False
        if wanted and getattr(model, "tp_context", None) is not None:
            raise LoaderError("LoRA adapters do not work with enable_tp: ExLlamaV2's tensor-parallel layers ignore "
                              "them (reload without enable_tp to use LoRAs)")
        for path, _ in loras:
            check_adapter(model, Path(path))
        applied = swap_adapters(self._adapters, loras, wanted, lambda path, scale: load_adapter(model, path, scale))
        self._adapters = applied
        return True

    def unload(self) -> None:
        for adapter in self._adapters:
            adapter.lora.unload()
        self._adapters = []
