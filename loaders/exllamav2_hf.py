"""ExLlamav2_HF: ExLlamaV2 computes the logits, Hearth's sampler pipeline picks every token.

Every Hearth sampler (epsilon/eta, top_n_sigma, quadratic smoothing, no_repeat_ngram, any order),
logprobs, banned strings, extension logits processors and CFG then work on EXL2/GPTQ models exactly
as on Transformers. CFG's negative prompt lives in a second ExLlamaV2 cache (slot 1), allocated the first
time guidance is used, so each guided step evaluates one token per sequence instead of re-reading it.

Registered by `loaders.exllamav2`'s hook (the module list in webui.plugins names that module only).
"""

from __future__ import annotations

from pathlib import Path

from loaders.exllamav2 import ExLlamav2Loader, ExLlamav2Model


class ExLlamav2HFModel(ExLlamav2Model):
    prefer_native = False


class ExLlamav2HFLoader(ExLlamav2Loader):
    name = "ExLlamav2_HF"
    description = "EXL2/GPTQ through ExLlamaV2, sampled by Hearth's own pipeline (every sampler, CFG, logprobs)."
    model_class = ExLlamav2HFModel

    @classmethod
    def score(cls, path: Path) -> int:
        base = super().score(path)
        return base - 5 if base else 0
