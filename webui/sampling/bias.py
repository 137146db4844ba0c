"""Fixed per-token changes: logit_bias, custom token bans and ban-EOS (a bias of -inf)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from webui.sampling.params import SamplingParams


def token_bias(params: SamplingParams, eos_ids: Iterable[int]) -> dict[int, float]:
    """The request's logit_bias, with custom_token_bans and (ban_eos_token) the EOS ids at -inf: what runs
    before every sampler, in Hearth's pipeline and in a native chain alike."""
    bias = {int(token): float(value) for token, value in params.logit_bias.items()}
    bias.update({int(token): float("-inf") for token in params.custom_token_bans})
    if params.ban_eos_token:
        bias.update({int(token): float("-inf") for token in eos_ids})
    return bias


class LogitBias:
    """Add a fixed bias to chosen tokens; a bias of -inf bans a token (custom_token_bans, ban EOS).

    The Sampler runs it before every other sampler, whatever sampler_priority says: a ban must hold in
    every order, and truncation should see the biased distribution the person asked for."""

    name = "logit_bias"

    def __init__(self, bias: Mapping[int, float], vocab_size: int):
        outside = [t for t in bias if not 0 <= int(t) < vocab_size]
        if outside:
            raise ValueError(f"token ids outside the vocabulary (0..{vocab_size - 1}): {sorted(outside)[:5]}")
        banned = [int(t) for t, b in bias.items() if b == float("-inf")]
        biased = {int(t): float(b) for t, b in bias.items() if b != float("-inf")}
        self.banned = torch.tensor(banned, dtype=torch.long)
        self.ids = torch.tensor(list(biased), dtype=torch.long)
        self.values = torch.tensor(list(biased.values()), dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # One pass each (index_fill / index_add copy once); the common case is a ban only (ban EOS).
        if len(self.banned):
            scores = scores.index_fill(-1, self.banned, float("-inf"))
        if len(self.ids):
            values = self.values.to(scores.dtype).expand(*scores.shape[:-1], len(self.ids))
            scores = scores.index_add(-1, self.ids, values)
        return scores
