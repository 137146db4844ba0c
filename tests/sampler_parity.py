"""The parity harness: one set of logits and one token history through llama.cpp's own sampler chain and
through Hearth's pipeline, read back as the surviving tokens and their probabilities.

llama.cpp's chain is applied to a candidates array (llama_sampler_apply), as llama.cpp does inside
llama_sampler_sample; Hearth's side is `build_sampler(...).process`. Tokens a sampler removed are
dropped from llama.cpp's array or set to -inf in it, and set to -inf by Hearth: both read as "not a
survivor".
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import torch

from webui.sampling import SamplingParams, build_sampler
from webui.sampling.pipeline import Sampler

#: Probabilities of surviving tokens must agree to this (llama.cpp computes in float32).
PROB_TOLERANCE = 2e-5


@dataclass
class Survivors:
    """Surviving tokens and their probabilities (the softmax over survivors, float64)."""

    probs: dict[int, float]
    selected: int | None = None

    @classmethod
    def from_logits(cls, ids: np.ndarray, logits: np.ndarray, selected: int | None = None) -> Survivors:
        live = np.isfinite(logits)
        ids, values = ids[live], logits[live].astype(np.float64)
        weights = np.exp(values - values.max())
        return cls(dict(zip(ids.tolist(), (weights / weights.sum()).tolist(), strict=True)), selected)

    def differences(self, other: Survivors, tolerance: float = PROB_TOLERANCE) -> list[str]:
        """What differs, for an assertion message ([] when they agree)."""
        problems = []
        only_self = sorted(set(self.probs) - set(other.probs))
        only_other = sorted(set(other.probs) - set(self.probs))
        if only_self or only_other:
            problems.append(
                f"survivors differ: only native {only_self[:10]}, only pipeline {only_other[:10]}"
            )
        for token in set(self.probs) & set(other.probs):
            if abs(self.probs[token] - other.probs[token]) > tolerance:
                problems.append(f"token {token}: p {self.probs[token]:.6f} vs {other.probs[token]:.6f}")
        return problems[:10]


class NativeChain:
    """llama.cpp's chain for `params` on `model` (a LlamaCppModel), fed `history` first as the native
    loop does, applied step by step to given logits."""

    def __init__(self, model, params: SamplingParams, history: list[int], seed: int = 1):
        from llama_cpp import llama_cpp as capi
        from llama_cpp._internals import LlamaTokenDataArray

        self.capi = capi
        self.chain = model.native_chain(params, seed, pick=False)
        self.array = LlamaTokenDataArray(n_vocab=model.vocab_size)
        for token in history:
            self.chain.accept(token)

    def apply(self, logits: np.ndarray) -> Survivors:
        self.array.copy_logits(logits.astype(np.float32))
        candidates = self.array.candidates
        self.capi.llama_sampler_apply(self.chain.sampler, ctypes.byref(candidates))
        # Some samplers (XTC) move the data pointer: read what it points at now.
        rows = (self.capi.llama_token_data * candidates.size).from_address(
            ctypes.cast(candidates.data, ctypes.c_void_p).value
        )
        ids = np.array([r.id for r in rows], dtype=np.int64)
        values = np.array([r.logit for r in rows], dtype=np.float32)
        selected = int(rows[candidates.selected].id) if 0 <= candidates.selected < candidates.size else None
        return Survivors.from_logits(ids, values, selected)

    def accept(self, token: int) -> None:
        self.chain.accept(token)

    def close(self) -> None:
        self.chain.close()


class PipelineChain:
    """Hearth's pipeline for the same `params`, `history` as the input ids."""

    def __init__(self, model, params: SamplingParams, history: list[int]):
        self.sampler: Sampler = build_sampler(
            params,
            vocab_size=model.vocab_size,
            eos_token_ids=model.eos_token_ids,
            prompt_ids=history,
            vocabulary=model.vocabulary,
        )
        self.ids = list(history)

    def apply(self, logits: np.ndarray) -> Survivors:
        scores = self.sampler.process(
            torch.tensor([self.ids]), torch.from_numpy(logits.astype(np.float32))[None]
        )[0]
        if self.sampler.picker is not None:
            scores = self.sampler.picker.keep(scores)
        return Survivors.from_logits(np.arange(scores.shape[0]), scores.numpy())

    def accept(self, token: int, logits: np.ndarray) -> None:
        """The picker's state update for a token drawn elsewhere (llama.cpp drew it), then the history."""
        picker = self.sampler.picker
        if picker is not None:
            scores = self.sampler.process(
                torch.tensor([self.ids]), torch.from_numpy(logits.astype(np.float32))[None]
            )[0]
            if picker.name == "mirostat":
                picker.observe(picker.keep(scores), token)
            else:
                picker.observe(float(torch.softmax(scores, dim=-1)[token]))
        self.ids.append(token)


def compare(
    model,
    params: SamplingParams,
    history: list[int],
    steps: list[np.ndarray],
    seed: int = 1,
    tolerance: float = PROB_TOLERANCE,
) -> list[str]:
    """Run both paths over `steps` (one logits vector per step; the token llama.cpp picks, or the most
    likely survivor, extends the history) and return the first disagreement ([] when none)."""
    native, pipeline = NativeChain(model, params, history, seed), PipelineChain(model, params, history)
    try:
        for step, logits in enumerate(steps):
            ours, theirs = native.apply(logits), pipeline.apply(logits)
            problems = ours.differences(theirs, tolerance)
            if problems:
                return [f"step {step}: {p}" for p in problems]
            token = ours.selected if ours.selected is not None else max(ours.probs, key=ours.probs.get)
            native.accept(token)
            pipeline.accept(token, logits)
        return []
    finally:
        native.close()


def zipf_logits(vocab: int, seed: int, exponent: float = 1.1, noise: float = 0.5) -> np.ndarray:
    """LM-like logits: Zipf-shaped probabilities in a random token order, plus noise."""
    rng = np.random.default_rng(seed)
    base = -exponent * np.log(np.arange(1, vocab + 1))
    return (base + noise * rng.standard_normal(vocab))[rng.permutation(vocab)].astype(np.float32)
