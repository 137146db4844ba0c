"""Truncation samplers: each removes unlikely tokens (sets their logit to -inf) and keeps at least one.

Most of them are one threshold in log space, so they need no sort and at most one log-normaliser:
p_i < c  <=>  logit_i < log(c) + logsumexp(logits). min_p and top_k need not even that. top_p looks at the
top 1024 tokens first and sorts the whole vocabulary only when those hold less than p of the mass; typical
and tfs are defined on the sorted distribution and always sort. Tokens tied with the last kept one stay.
Each class is a transformers-compatible logits processor that returns a new tensor.
"""

from __future__ import annotations

import math

import torch

from webui.sampling.tensor_ops import NEG_INF, log_normalizer, remove_below, row_max


def _mask(scores: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(remove, NEG_INF)


class TopK:
    """Keep the k highest logits."""

    name = "top_k"

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"top_k must be >= 1, got {k}")
        self.k = k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = min(self.k, scores.shape[-1])
        return remove_below(scores, torch.topk(scores, k, dim=-1).values[..., -1:])


class TopP:
    """Nucleus: keep the smallest set of most likely tokens whose probabilities sum to >= p."""

    name = "top_p"

    HEADS = (1024, 16384)  # tokens looked at, in turn, before sorting the whole vocabulary

    def __init__(self, p: float):
        if not 0 <= p <= 1:
            raise ValueError(f"top_p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        values, order = self._head(torch.softmax(scores, dim=-1))
        # Keep a token while the tokens before it hold less than p.
        kept = (
            ((values.cumsum(dim=-1) - values) < self.p).sum(dim=-1, keepdim=True).clamp_(1, values.shape[-1])
        )
        return remove_below(scores, scores.gather(-1, order.gather(-1, kept - 1)))

    def _head(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The most likely tokens, sorted, holding at least p of the mass in every row."""
        for head in self.HEADS:
            if head < probs.shape[-1]:
                values, order = torch.topk(probs, head, dim=-1)
                if bool((values.sum(dim=-1) >= self.p).all()):
                    return values, order
        return torch.sort(probs, dim=-1, descending=True)


class MinP:
    """Keep tokens whose probability is at least min_p times the top token's."""

    name = "min_p"

    def __init__(self, min_p: float):
        if not 0 < min_p <= 1:
            raise ValueError(f"min_p must be in (0, 1], got {min_p}")
        self.min_p = min_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # In log space: log p_i < log(min_p) + log p_max  <=>  logit_i < logit_max + log(min_p).
        return remove_below(scores, row_max(scores) + math.log(self.min_p))


class TopA:
    """Remove tokens with probability below top_a * p_max^2."""

    name = "top_a"

    def __init__(self, top_a: float):
        if not 0 < top_a <= 1:
            raise ValueError(f"top_a must be in (0, 1], got {top_a}")
        self.top_a = top_a

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # p_i < a * p_max^2  <=>  logit_i < log(a) + 2 * logit_max - logsumexp (never above logit_max).
        top = row_max(scores)
        return remove_below(scores, math.log(self.top_a) + 2 * top - log_normalizer(scores, top))


class TypicalP:
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy, up to mass p.

    The kept set is every token whose distance |surprise - entropy| is at most that of the token where
    the mass, added in order of distance, reaches p. Only that threshold needs an order, so the closest
    `k` distances are taken with topk (k = 256, then 4x more until the mass is reached) instead of
    sorting the vocabulary: on 32k tokens ~0.1 ms instead of ~1.5 ms, and the same result."""

    name = "typical_p"
    first_k = 256

    def __init__(self, mass: float):
        if not 0 < mass < 1:
            raise ValueError(f"typical_p must be in (0, 1), got {mass}")
        self.mass = mass

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores, dim=-1)
        p = logp.exp()
        entropy = -(logp * p).nansum(dim=-1, keepdim=True)
        distance = (-logp - entropy).abs()
        return _mask(scores, distance > self._threshold(distance, p))

    def _threshold(self, distance: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Per row, the distance of the token at which the mass (closest first) reaches `mass`."""
        n = distance.shape[-1]
        k = min(self.first_k, n)
        while True:
            closest, order = torch.topk(distance, k, dim=-1, largest=False, sorted=True)
            last = (p.gather(-1, order).cumsum(dim=-1) < self.mass).sum(dim=-1, keepdim=True)
            if k == n or bool((last < k).all()):
                return closest.gather(-1, last.clamp(max=k - 1))
            k = min(4 * k, n)


class TailFree:
    """Tail-free sampling: cut where the sorted probability curve flattens (normalized |second
    derivative| cumulated beyond z). The first token is always kept.

    Tokens already removed (probability 0) add nothing to the curve past its last two steps, so when
    earlier samplers removed tokens only the survivors are sorted, with two zeros appended for those
    steps: the same cut as sorting the whole vocabulary, at a fraction of the cost."""

    name = "tfs"

    def __init__(self, z: float):
        if not 0 < z < 1:
            raise ValueError(f"tfs must be in (0, 1), got {z}")
        self.z = z

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] < 3:
            return scores
        return torch.stack([self._row(row) for row in scores])  # a batch of one in practice

    def _row(self, row: torch.Tensor) -> torch.Tensor:
        live = torch.isfinite(row).nonzero().squeeze(-1)
        partial = row.shape[-1] - live.shape[0] >= 2
        values = row[live] if partial else row
        if values.shape[-1] < 2:
            return row
        sorted_logits, order = torch.sort(values, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        if partial:
            probs = torch.cat([probs, probs.new_zeros(2)])
        d2 = probs.diff().diff().abs()
        cdf = (d2 / d2.sum().clamp_min(1e-12)).cumsum(dim=-1)
        keep = torch.cat([cdf.new_ones(1, dtype=torch.bool), cdf <= self.z, cdf.new_zeros(1, dtype=torch.bool)])
        removed = order[~keep[: order.shape[0]]]
        return row.index_fill(0, live[removed] if partial else removed, NEG_INF)

class EpsilonCutoff:
    """Remove tokens with probability below epsilon (given in units of 1e-4)."""

    name = "epsilon_cutoff"

    def __init__(self, epsilon_1e4: float):
        if epsilon_1e4 <= 0:
            raise ValueError(f"epsilon_cutoff must be > 0, got {epsilon_1e4}")
        self.epsilon = epsilon_1e4 * 1e-4

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top = row_max(scores)
        threshold = log_normalizer(scores, top) + math.log(self.epsilon)
        return remove_below(scores, torch.minimum(threshold, top))  # never remove the top token


class EtaCutoff:
    """Entropy-adaptive cutoff: remove p < min(eta, sqrt(eta) * exp(-H)), eta given in units of 1e-4."""

    name = "eta_cutoff"

    def __init__(self, eta_1e4: float):
        if eta_1e4 <= 0:
            raise ValueError(f"eta_cutoff must be > 0, got {eta_1e4}")
        self.eta = eta_1e4 * 1e-4

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top = row_max(scores)
        lse = log_normalizer(scores, top)
        logp = scores - lse
        entropy = -(torch.softmax(scores, dim=-1) * logp).nansum(
            dim=-1, keepdim=True
        )  # 0 * -inf terms are NaN: skipped
        cutoff = torch.minimum(torch.full_like(entropy, self.eta), math.sqrt(self.eta) * torch.exp(-entropy))
        return remove_below(scores, torch.minimum(lse + cutoff.log(), top))


class TopNSigma:
    """Keep tokens whose logit is within n standard deviations of the top logit (over finite logits)."""

    name = "top_n_sigma"

    def __init__(self, n: float):
        if n <= 0:
            raise ValueError(f"top_n_sigma must be > 0, got {n}")
        self.n = n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        finite = torch.isfinite(scores)
        count = finite.sum(dim=-1, keepdim=True).clamp_min(1)
        values = torch.where(finite, scores, torch.zeros_like(scores))
        mean = values.sum(dim=-1, keepdim=True) / count
        var = (torch.where(finite, (scores - mean) ** 2, torch.zeros_like(scores))).sum(
            dim=-1, keepdim=True
        ) / count
        return remove_below(scores, row_max(scores) - self.n * var.sqrt())
