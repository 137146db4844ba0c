"""The HF path: the model gives next-token logits, Hearth's sampler pipeline picks the token.

Used for Transformers and the *_HF loaders, and for any llama.cpp request the native chain cannot honour
(a sampler it lacks, logprobs, classifier-free guidance, banned strings, extension processors).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from webui.generation import GenerationRequest, TokenLogprob
    from webui.loader_api import Model
    from webui.sampling import Sampler

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


def _logprob_entry(model: Model, raw: torch.Tensor, token: int, n: int) -> TokenLogprob:
    from webui.generation import TokenLogprob

    logprobs = torch.log_softmax(raw.float(), dim=-1)
    top = torch.topk(logprobs, min(n, logprobs.numel()))
    alternatives = [(int(i), model.detokenize([int(i)]), float(v)) for v, i in zip(top.values, top.indices, strict=True)]
    return TokenLogprob(token, model.detokenize([token]), float(logprobs[token]), alternatives)


def sampled_tokens(model: Model, ids: list[int], request: GenerationRequest, sampler: Sampler) -> TokenSource:
    """Yield (token, logprob entry or None) forever; the caller stops it."""
    scale = request.sampling.guidance_scale
    neg = negative_ids(model, request) if scale != 1 else []
    seq = torch.empty(len(ids) + request.max_new_tokens + 1, dtype=torch.long)
    seq[: len(ids)] = torch.tensor(ids, dtype=torch.long)
    current = list(ids)
    while True:
        raw = model.logits(current)
        scores = raw if scale == 1 else guided_scores(raw, model.logits(neg, slot=1), scale)
        view = seq[: len(current)].unsqueeze(0)
        token = sampler.choose(view, scores.unsqueeze(0).clone() if scores is raw else scores.unsqueeze(0))
        entry = _logprob_entry(model, raw, token, request.logprobs) if request.logprobs else None
        yield token, entry
        seq[len(current)] = token
        current.append(token)
        if neg:
            neg.append(token)
