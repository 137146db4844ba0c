"""The pipeline path: the model gives next-token logits, Hearth's sampler pipeline picks the token.

Any backend can take it (it needs only `Model.logits`), beside a loader's native path. Used for Transformers
and the *_HF loaders, and for any llama.cpp request the native chain cannot honour (a sampler it lacks,
logprobs, classifier-free guidance, banned strings, extension processors). Grammars and JSON schemas run
here too, as a mask before the sampler (`webui.sampling.constraints`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from webui.events import TokenLogprob

if TYPE_CHECKING:
    from webui.generation import GenerationRequest
    from webui.loader_api import Model
    from webui.sampling import Sampler
    from webui.sampling.constraints import Constraint

TokenSource = Iterator[tuple[int, "TokenLogprob | None"]]


def guided_scores(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on log-probabilities: uncond + scale * (cond - uncond).

    Scale 1 returns the conditional distribution; above 1 it pushes away from the negative prompt."""
    cond_lp = torch.log_softmax(cond.float(), dim=-1)
    uncond_lp = torch.log_softmax(uncond.float(), dim=-1)
    return uncond_lp + scale * (cond_lp - uncond_lp)


def negative_ids(model: Model, request: GenerationRequest) -> list[int]:
    """The CFG negative sequence's prompt: the negative prompt, or just BOS (the unconditional model)."""
    text = request.sampling.negative_prompt
    ids = model.tokenize(text, add_bos=request.add_bos_token) if text else []
    if not ids:
        ids = [model.bos_token_id] if model.bos_token_id is not None else model.tokenize(" ", add_bos=False)[:1]
    return ids


def logprob_entry(model: Model, raw: torch.Tensor, token: int, n: int) -> TokenLogprob:
    """`token`'s log-probability under the raw logits `raw`, with the top `n` alternatives."""

    logprobs = torch.log_softmax(raw.float(), dim=-1)
    top = torch.topk(logprobs, min(n, logprobs.numel()))
    alternatives = [(int(i), model.detokenize([int(i)]), float(v)) for v, i in zip(top.values, top.indices, strict=True)]
    return TokenLogprob(token, model.detokenize([token]), float(logprobs[token]), alternatives)


class SampledTokens:
    """Iterator of (token, logprob entry or None), endless: the caller stops it.

    It can be rewound (`rollback`) with a token banned at the rewound position, which is how banned
    strings are enforced. A `constraint` (grammar or JSON schema) masks the scores before the sampler
    picks, follows each token and rewinds with it; once it is complete the next token is EOS."""

    def __init__(self, model: Model, ids: list[int], request: GenerationRequest, sampler: Sampler,
                 constraint: Constraint | None = None):
        self._model = model
        self._sampler = sampler
        self._constraint = constraint
        self._end = min(model.eos_token_ids, default=None)
        self._n_prompt = len(ids)
        self._logprobs = request.logprobs
        self._scale = request.sampling.guidance_scale
        self._neg_prompt = negative_ids(model, request) if self._scale != 1 else []
        self._seq = torch.empty(len(ids) + request.max_new_tokens + 1, dtype=torch.long)
        self._seq[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        self._current = list(ids)
        self._bans: dict[int, list[int]] = {}

    def __iter__(self) -> SampledTokens:
        return self

    def __next__(self) -> tuple[int, TokenLogprob | None]:
        model, current, constraint = self._model, self._current, self._constraint
        if constraint is not None and constraint.complete:
            return self._complete()
        raw = model.logits(current)
        if self._scale != 1:
            negative = self._neg_prompt + current[self._n_prompt :]
            scores = guided_scores(raw, model.logits(negative, slot=1), self._scale)
        else:
            scores = raw  # samplers never write to their input (see Sampler)
        if constraint is not None:
            scores = constraint.mask(scores)  # a copy: raw may be the model's cache
        banned = self._bans.get(len(current))
        if banned:
            scores = scores.index_fill(0, torch.tensor(banned), float("-inf"))
        token = self._sampler.choose(self._seq[: len(current)].unsqueeze(0), scores.unsqueeze(0))
        if constraint is not None:
            constraint.advance(token)
        entry = logprob_entry(model, raw, token, self._logprobs) if self._logprobs else None
        self._seq[len(current)] = token
        current.append(token)
        return token, entry

    def _complete(self) -> tuple[int, TokenLogprob | None]:
        """The grammar allows nothing more: EOS, without asking the sampler (EOS may be banned)."""
        if self._end is None:
            raise StopIteration
        entry = logprob_entry(self._model, self._model.logits(self._current), self._end, self._logprobs) if self._logprobs else None
        return self._end, entry

    def rollback(self, n_generated: int, ban: int) -> None:
        """Forget generated tokens from index `n_generated` on, and never pick `ban` there again."""
        position = self._n_prompt + n_generated
        if self._constraint is not None:
            self._constraint.rollback(len(self._current) - position)
        del self._current[position:]
        self._bans = {p: t for p, t in self._bans.items() if p <= position}
        self._bans.setdefault(position, []).append(ban)
