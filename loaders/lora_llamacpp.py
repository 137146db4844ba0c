"""LoRA adapters on a loaded llama.cpp model (llama-cpp-python's ``llama_adapter_lora_init`` and
``llama_set_adapters_lora``): applied to each context with a scale, removed by setting none.

llama.cpp reads GGUF adapters only: a PEFT folder is converted first (`webui.lora_convert`). An adapter is
checked against the base GGUF's tensor shapes before llama.cpp sees it (llama.cpp would only log why it
refused), then initialised once per file and kept until the model is freed (llama.cpp frees a model's
adapters with it).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from webui.errors import LoaderError
from webui.lora_convert import convert_peft_adapter
from webui.loras import check_gguf_adapter, is_peft_folder


class LlamaLoras:
    """The adapters of one llama.cpp model and the set applied to its contexts."""

    def __init__(self, capi: Any, model: Any, base_gguf: Path):
        self._capi = capi
        self._model = model  # llama_cpp._internals.LlamaModel
        self._base = base_gguf
        self._adapters: dict[tuple[str, float], Any] = {}  # (path, mtime) -> llama_adapter_lora pointer
        self._applied: list[tuple[Any, float]] = []

    def gguf_for(self, path: Path) -> Path:
        if is_peft_folder(path):
            return convert_peft_adapter(path, self._base)
        if path.is_file() and path.suffix.lower() == ".gguf":
            return path
        raise LoaderError(
            f"LoRA {path.name}: llama.cpp needs a GGUF LoRA adapter or a PEFT folder to convert"
        )

    def _adapter(self, gguf: Path, label: str) -> Any:
        key = (str(gguf.resolve()), gguf.stat().st_mtime)
        if key not in self._adapters:
            pointer = self._capi.llama_adapter_lora_init(self._model.model, str(gguf).encode("utf-8"))
            if not pointer:
                raise LoaderError(f"llama.cpp refused the LoRA {label} ({gguf.name})")
            self._adapters[key] = pointer
        return self._adapters[key]

    def prepare(self, loras: Sequence[tuple[Path, float]]) -> list[tuple[Any, float]]:
        """Each adapter converted if needed, checked against the base model and initialised; nothing applied."""
        ggufs = [(self.gguf_for(path), path.name, scale) for path, scale in loras]
        for gguf, label, _ in ggufs:
            check_gguf_adapter(gguf, self._base, label)
        return [(self._adapter(gguf, label), scale) for gguf, label, scale in ggufs]

    def set_on(self, ctx: Any, applied: Sequence[tuple[Any, float]] | None = None) -> None:
        """Apply `applied` (default: the current set) to one LlamaContext."""
        applied = self._applied if applied is None else applied
        n = len(applied)
        adapters = (self._capi.llama_adapter_lora_p_ctypes * n)(*(a for a, _ in applied)) if n else None
        scales = (ctypes.c_float * n)(*(s for _, s in applied)) if n else None
        if self._capi.llama_set_adapters_lora(ctx.ctx, adapters, n, scales):
            raise LoaderError("llama.cpp could not set the LoRA adapters on its context")

    def apply(self, loras: Sequence[tuple[Path, float]], contexts: Iterable[Any]) -> None:
        prepared = self.prepare(loras)
        contexts = list(contexts)
        try:
            for ctx in contexts:
                self.set_on(ctx, prepared)
        except LoaderError:
            for ctx in contexts:
                self.set_on(ctx, self._applied)
            raise
        self._applied = prepared
