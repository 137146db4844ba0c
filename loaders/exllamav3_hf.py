"""ExLlamav3_HF: ExLlamaV3 computes the logits, Hearth's sampler pipeline picks every token.

Every Hearth sampler (DRY, XTC, Mirostat, epsilon/eta, top_n_sigma, any order), logprobs, grammars, banned
strings, extension logits processors and CFG then work on EXL3 models exactly as on Transformers. CFG's
negative prompt lives in the second cache made at load (`cfg_cache`).

Registered by `loaders.exllamav3`'s hook (the module list in webui.plugins names that module only).
"""

from __future__ import annotations

from pathlib import Path

from loaders.exllamav3 import ExLlamav3Loader, ExLlamav3Model


class ExLlamav3HFModel(ExLlamav3Model):
    prefer_native = False


class ExLlamav3HFLoader(ExLlamav3Loader):
    name = "ExLlamav3_HF"
    description = "EXL3 through ExLlamaV3, sampled by Hearth's own pipeline (every sampler, CFG, logprobs)."
    model_class = ExLlamav3HFModel

    @classmethod
    def score(cls, path: Path) -> int:
        base = super().score(path)
        return base - 5 if base else 0
