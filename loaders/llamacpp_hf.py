"""llamacpp_HF: llama.cpp computes the logits, Hearth's sampler pipeline picks every token.

Every sampler (top_a, tfs, epsilon/eta, smoothing, no_repeat_ngram, ...), CFG with a negative prompt,
banned strings and extension logits processors then work on GGUF models exactly as on Transformers.

Why our own loop and not transformers' `generate()` behind a GenerationMixin wrapper: the loop is
a few lines in `webui.generation`, reuses llama.cpp's KV cache by longest common prefix across requests
(generate() would re-read the prompt on every call), keeps a second context for the CFG negative
prompt, and avoids generate()'s per-step tensor bookkeeping, which matters on a 2-core CPU where the
budget per token is a few milliseconds.
"""

from __future__ import annotations

from pathlib import Path

from loaders.llamacpp import LlamaCppLoader, LlamaCppModel
from webui.loader_api import Loader
from webui.plugins import hookimpl


class LlamaCppHFModel(LlamaCppModel):
    prefer_native = False


class LlamaCppHFLoader(LlamaCppLoader):
    name = "llamacpp_HF"
    description = "GGUF through llama.cpp, sampled by Hearth's own pipeline (every sampler, CFG, negative prompt)."
    model_class = LlamaCppHFModel

    @classmethod
    def score(cls, path: Path) -> int:
        base = super().score(path)
        return base - 10 if base else 0


@hookimpl
def hearth_loaders() -> list[type[Loader]]:
    return [LlamaCppHFLoader]
