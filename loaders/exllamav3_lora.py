"""LoRA adapters on an ExLlamaV3 model: PEFT folders through exllamav3 1.6.5's `LoRA.from_directory`
(exllamav3/model/lora.py).

A loaded LoRA stores its factors on the target Linear modules, and every Linear.forward adds the product of
each adapter it holds until `LoRA.unload()` removes them; so the applied set is changed by loading and
unloading, never passed per call. LoRA.__init__ matches a PEFT key by its suffixes against
`model.modules_dict` (Linear modules only), reads r and lora_alpha (use_rslora too), refuses fan_in_fan_out,
and skips tensor-parallel (sliced) layers: Hearth checks the same things first and refuses what exllamav3
would skip silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loaders.lora_exllamav2 import (
    LoadedAdapter,
    adapter_key,
    check_module_shapes,
    check_peft_folder,
    swap_adapters,
)
from webui.errors import LoaderError


class ExLlamav3Loras:
    """`set_loras` for ExLlamav3Model (uses its `_model`, `_slots` and `_reset`)."""

    supports_loras = True
    _model: Any
    _slots: dict[int, Any]
    _adapters: list[LoadedAdapter]

    def set_loras(self, loras: Sequence[tuple[Path, float]]) -> None:
        """Checked against the model's layers first; new ones are loaded before old ones are unloaded, so a
        failure leaves the model as it was. Every slot's cache is emptied when the set changes."""
        wanted = [adapter_key(Path(path), float(scale)) for path, scale in loras]
        if wanted == [a.key for a in self._adapters]:
            return
        if wanted and getattr(self._model, "loaded_tp", False):
            raise LoaderError(
                "LoRA adapters do not work with enable_tp: ExLlamaV3 skips tensor-parallel layers "
                "(reload without enable_tp to use LoRAs)"
            )
        for path, _ in loras:
            self._check_adapter(Path(path))
        applied = swap_adapters(self._adapters, loras, wanted, self._load_adapter)
        self._adapters = applied
        for state in self._slots.values():
            self._reset(state)  # type: ignore[attr-defined]

    def _check_adapter(self, path: Path) -> None:
        check_peft_folder(path, "ExLlamaV3")
        if self._model.modules_dict is None:  # as LoRA.__init__ builds it
            self._model.modules_dict = {m.key: m for m in self._model}
        check_module_shapes(self._model.modules_dict, path)

    def _load_adapter(self, path: Path, scale: float) -> Any:
        from exllamav3.model.lora import LoRA

        try:
            # LoRA.from_directory(model, directory, lora_scaling = 1.0) (exllamav3/model/lora.py)
            return LoRA.from_directory(self._model, str(path), lora_scaling=scale)
        except RuntimeError as exc:
            raise LoaderError(f"LoRA {path.name}: ExLlamaV3 could not load it: {exc}") from exc
        except (AssertionError, ValueError, KeyError, TypeError, OSError) as exc:
            reason = str(exc).strip() or type(exc).__name__
            raise LoaderError(f"LoRA {path.name}: ExLlamaV3 cannot apply it ({reason})") from exc

    def _unload_adapters(self) -> None:
        for adapter in self._adapters:
            adapter.lora.unload()
        self._adapters = []
