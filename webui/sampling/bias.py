"""Fixed per-token changes: logit_bias, custom token bans and ban-EOS (a bias of -inf)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


class LogitBias:
    """Add a fixed bias to chosen tokens; a bias of -inf bans a token (custom_token_bans, ban EOS).

    The Sampler runs it before every other sampler, whatever sampler_priority says: a ban must hold in
    every order, and truncation should see the biased distribution the person asked for."""

    name = "logit_bias"

    def __init__(self, bias: Mapping[int, float], vocab_size: int):
        outside = [t for t in bias if not 0 <= int(t) < vocab_size]
        if outside:
            raise ValueError(f"token ids outside the vocabulary (0..{vocab_size - 1}): {sorted(outside)[:5]}")
        self.ids = torch.tensor([int(t) for t in bias], dtype=torch.long)
        self.values = torch.tensor([float(b) for b in bias.values()], dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not len(self.ids):
            return scores
        out = scores.clone()
        out[..., self.ids] += self.values.to(scores.dtype)
        return out
