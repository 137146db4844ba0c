"""DRY, "Don't Repeat Yourself": a penalty that grows with the length of a verbatim repeat."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


class DRY:
    """Penalise the token that would extend a repeat of an earlier sequence (the standard DRY algorithm,
    as in text-generation-webui, KoboldCpp and llama.cpp).

    Let the sequence end with token x. For every earlier occurrence of x at position i, the match length
    L(i) is the number of tokens, counting x, for which the text ending at i equals the text ending now.
    The token t that followed (at i + 1) would extend the repeat; over all i with that follower, take the
    longest match L, and if L >= allowed_length:  logit[t] -= multiplier * base ** (L - allowed_length).
    Sequence breakers (token ids of newline, ':', '"', '*' ...) end a match and are never penalised,
    so formatting that must repeat is left alone. Only the last `last_n` tokens are looked at (0 = all),
    and a match is counted up to MAX_MATCH tokens, which keeps the cost bounded and the penalty finite.

    Matching is vectorised over all occurrences of x at once: one numpy pass per extra matched token."""

    name = "dry"
    MAX_MATCH = 50

    def __init__(
        self, multiplier: float, base: float, allowed_length: int, breakers: Iterable[int], last_n: int = 0
    ):
        if multiplier <= 0 or base < 1 or allowed_length < 1 or last_n < 0:
            raise ValueError(
                "DRY needs multiplier > 0, base >= 1, allowed_length >= 1 and penalty_last_n >= 0"
            )
        self.multiplier, self.base, self.allowed = multiplier, base, allowed_length
        self.breakers = np.array(sorted(set(breakers)), dtype=np.int64)
        self.last_n = last_n

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

    def penalties(self, tokens: np.ndarray) -> dict[int, float]:
        """Token id -> penalty for one sequence (1-D array of ids)."""
        end = len(tokens) - 1
        if end < 1 or np.isin(tokens[end], self.breakers):
            return {}
        starts = np.flatnonzero(tokens[:end] == tokens[end])
        starts = starts[~np.isin(tokens[starts + 1], self.breakers)]
        if not len(starts):
            return {}
        lengths = np.ones(len(starts), dtype=np.int64)
        alive = np.ones(len(starts), dtype=bool)
        for step in range(1, min(self.MAX_MATCH, end + 1)):
            ours = tokens[end - step]
            if np.isin(ours, self.breakers):
                break
            earlier = starts - step
            alive &= earlier >= 0
            alive &= tokens[np.maximum(earlier, 0)] == ours
            if not alive.any():
                break
            lengths += alive
        followers = tokens[starts + 1]
        longest: dict[int, int] = {}
        for follower, length in zip(
            followers[lengths >= self.allowed].tolist(),
            lengths[lengths >= self.allowed].tolist(),
            strict=True,
        ):
            longest[follower] = max(length, longest.get(follower, 0))
        return {t: self.multiplier * self.base ** (n - self.allowed) for t, n in longest.items()}
