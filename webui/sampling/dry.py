"""DRY, "Don't Repeat Yourself": a penalty that grows with the length of a verbatim repeat."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping

import numpy as np
import torch

from webui.sampling.vocabulary import BreakerTable, single_token_table

#: A penalty this large already removes a token (exp(-1e4) is 0 in float32 and float64), so a match
#: need not be followed further: longer ones cannot change the result.
_DECISIVE_PENALTY = 1e4


class DRY:
    """Penalise the token that would extend a repeat of an earlier sequence (the standard DRY algorithm,
    as in text-generation-webui, KoboldCpp and llama.cpp).

    Let the sequence end with token x. For every earlier occurrence of x at position i, the match length
    L(i) is the number of tokens, counting x, for which the text ending at i equals the text ending now.
    The token t that followed (at i + 1) would extend the repeat; over all i with that follower, take the
    longest match L, and if L >= allowed_length:  logit[t] -= multiplier * base ** (L - allowed_length).

    Sequence breakers (`breakers`: head token -> token tails that complete a breaker, see
    webui.sampling.vocabulary) bound the match: it never reaches back past the most recent complete
    breaker, so formatting that must repeat ("\\n", "User:") is left alone, and a token that is a whole
    breaker on its own is never penalised. Only the last `last_n` tokens are looked at (0 = all).
    Matching is vectorised over all occurrences of x at once: one numpy pass per extra matched token,
    and it stops once the penalty is decisive."""

    name = "dry"

    def __init__(
        self,
        multiplier: float,
        base: float,
        allowed_length: int,
        breakers: BreakerTable | Iterable[int],
        last_n: int = 0,
    ):
        if multiplier <= 0 or base < 1 or allowed_length < 1 or last_n < 0:
            raise ValueError(
                "DRY needs multiplier > 0, base >= 1, allowed_length >= 1 and penalty_last_n >= 0"
            )
        self.multiplier, self.base, self.allowed = multiplier, base, allowed_length
        self.breakers: BreakerTable = (
            breakers if isinstance(breakers, Mapping) else single_token_table(breakers)
        )
        self.is_head = np.zeros(
            max(self.breakers, default=-1) + 2, dtype=bool
        )  # last slot: ids past the table
        self.is_head[list(self.breakers)] = True
        self.alone = np.array(sorted(t for t, tails in self.breakers.items() if () in tails), dtype=np.int64)
        self.last_n = last_n
        self.max_match = self._max_match()

    def _max_match(self) -> int:
        """The match length past which the penalty no longer changes the outcome."""
        if self.base <= 1.000001:
            return self.allowed  # every long-enough match gets the same penalty
        ratio = min(_DECISIVE_PENALTY / self.multiplier, sys.float_info.max)  # a subnormal multiplier: inf
        growth = math.log(max(ratio, 1.0)) / math.log(self.base)
        return self.allowed + math.ceil(growth)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        window = input_ids[:, -self.last_n :] if self.last_n > 0 else input_ids
        out = scores
        for row in range(window.shape[0]):
            penalties = self.penalties(window[row].cpu().numpy())
            if penalties:
                out = scores.clone() if out is scores else out
                ids = torch.tensor(list(penalties), dtype=torch.long, device=scores.device)
                out[row, ids] -= torch.tensor(
                    list(penalties.values()), dtype=scores.dtype, device=scores.device
                )
        return out

    def repeat_limit(self, tokens: np.ndarray) -> int:
        """How many tokens back from the end a repeat may reach: up to the most recent complete breaker."""
        n = len(tokens)
        heads = self.is_head[np.minimum(tokens, len(self.is_head) - 1)]
        for head in np.flatnonzero(heads)[::-1].tolist():
            after = n - 1 - head  # tokens after the head
            tails = [t for t in self.breakers[int(tokens[head])] if len(t) <= after]
            matched = [len(t) for t in tails if tuple(tokens[head + 1 : head + 1 + len(t)].tolist()) == t]
            if matched:
                return after - max(matched)
        return n

    def penalties(self, tokens: np.ndarray) -> dict[int, float]:
        """Token id -> penalty for one sequence (1-D array of ids)."""
        end = len(tokens) - 1
        limit = min(self.repeat_limit(tokens), self.max_match)
        if end < 1 or limit < self.allowed:
            return {}
        starts = np.flatnonzero(tokens[:end] == tokens[end])
        if not len(starts):
            return {}
        lengths = np.ones(len(starts), dtype=np.int64)
        alive = np.ones(len(starts), dtype=bool)
        for step in range(1, limit):
            earlier = starts - step
            alive &= earlier >= 0
            alive &= tokens[np.maximum(earlier, 0)] == tokens[end - step]
            if not alive.any():
                break
            lengths += alive
        keep = lengths >= self.allowed
        followers, lengths = tokens[starts + 1][keep], lengths[keep]
        spared = np.isin(followers, self.alone)
        longest: dict[int, int] = {}
        for follower, length in zip(followers[~spared].tolist(), lengths[~spared].tolist(), strict=True):
            longest[follower] = max(length, longest.get(follower, 0))
        return {t: self.multiplier * self.base ** (n - self.allowed) for t, n in longest.items()}
