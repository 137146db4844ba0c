"""Truncation samplers: each removes unlikely tokens (sets their logit to -inf) and keeps at least one.

min_p, top_a, epsilon and eta need only a softmax; top_k uses topk; top_p, typical and tfs need a sort.
"""

from __future__ import annotations

import math

import torch

NEG_INF = float("-inf")


def _mask(scores: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(remove, NEG_INF)


class TopK:
    """Keep the k highest logits."""

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"top_k must be >= 1, got {k}")
        self.k = k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = min(self.k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        return _mask(scores, scores < kth)


class TopP:
    """Nucleus: keep the smallest set of most likely tokens whose probabilities sum to >= p."""

    def __init__(self, p: float):
        if not 0 <= p <= 1:
            raise ValueError(f"top_p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        sorted_logits, order = torch.sort(scores, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Remove a token when the tokens before it already reach p.
        remove_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= self.p
        remove_sorted[..., 0] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        return _mask(scores, remove)


class MinP:
    """Keep tokens whose probability is at least min_p times the top token's."""

    def __init__(self, min_p: float):
        if not 0 < min_p <= 1:
            raise ValueError(f"min_p must be in (0, 1], got {min_p}")
        self.min_p = min_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # In log space: log p_i < log(min_p) + log p_max  <=>  logit_i < logit_max + log(min_p).
        threshold = scores.max(dim=-1, keepdim=True).values + math.log(self.min_p)
        return _mask(scores, scores < threshold)


class TopA:
    """Remove tokens with probability below top_a * p_max^2."""

    def __init__(self, top_a: float):
        if not 0 < top_a <= 1:
            raise ValueError(f"top_a must be in (0, 1], got {top_a}")
        self.top_a = top_a

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores, dim=-1)
        p_max = probs.max(dim=-1, keepdim=True).values
        return _mask(scores, probs < self.top_a * p_max * p_max)


class TypicalP:
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy, up to mass p."""

    def __init__(self, mass: float):
        if not 0 < mass < 1:
            raise ValueError(f"typical_p must be in (0, 1), got {mass}")
        self.mass = mass

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores, dim=-1)
        p = logp.exp()
        entropy = -(logp * p).nansum(dim=-1, keepdim=True)
        shifted = (-logp - entropy).abs()
        sorted_shifted, order = torch.sort(shifted, dim=-1)
        cumulative = p.gather(-1, order).cumsum(dim=-1)
        last = (cumulative < self.mass).sum(dim=-1, keepdim=True)
        remove_sorted = sorted_shifted > sorted_shifted.gather(-1, last.clamp(max=scores.shape[-1] - 1))
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        return _mask(scores, remove)


class TailFree:
    """Tail-free sampling: cut where the sorted probability curve flattens (normalized |second
    derivative| cumulated beyond z). The first token is always kept."""

    def __init__(self, z: float):
        if not 0 < z < 1:
            raise ValueError(f"tfs must be in (0, 1), got {z}")
        self.z = z

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] < 3:
            return scores
        sorted_logits, order = torch.sort(scores, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        d2 = probs.diff(dim=-1).diff(dim=-1).abs()
        total = d2.sum(dim=-1, keepdim=True)
        cdf = (d2 / total.clamp_min(1e-12)).cumsum(dim=-1)
        remove_sorted = torch.cat([torch.zeros_like(cdf[..., :1], dtype=torch.bool), cdf > self.z,
                                   torch.ones_like(cdf[..., :1], dtype=torch.bool)], dim=-1)
        remove_sorted[..., 0] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        return _mask(scores, remove)


class EpsilonCutoff:
    """Remove tokens with probability below epsilon (given in units of 1e-4)."""

    def __init__(self, epsilon_1e4: float):
        if epsilon_1e4 <= 0:
            raise ValueError(f"epsilon_cutoff must be > 0, got {epsilon_1e4}")
        self.epsilon = epsilon_1e4 * 1e-4

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores, dim=-1)
        remove = probs < self.epsilon
        remove &= probs < probs.max(dim=-1, keepdim=True).values  # never remove the top token
        return _mask(scores, remove)


class EtaCutoff:
    """Entropy-adaptive cutoff: remove p < min(eta, sqrt(eta) * exp(-H)), eta given in units of 1e-4."""

    def __init__(self, eta_1e4: float):
        if eta_1e4 <= 0:
            raise ValueError(f"eta_cutoff must be > 0, got {eta_1e4}")
        self.eta = eta_1e4 * 1e-4

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores, dim=-1)
        probs = logp.exp()
        entropy = -(probs * logp).nansum(dim=-1, keepdim=True)
        cutoff = torch.minimum(torch.full_like(entropy, self.eta), math.sqrt(self.eta) * torch.exp(-entropy))
        remove = (probs < cutoff) & (probs < probs.max(dim=-1, keepdim=True).values)
        return _mask(scores, remove)


class TopNSigma:
    """Keep tokens whose logit is within n standard deviations of the top logit (over finite logits)."""

    def __init__(self, n: float):
        if n <= 0:
            raise ValueError(f"top_n_sigma must be > 0, got {n}")
        self.n = n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        finite = torch.isfinite(scores)
        count = finite.sum(dim=-1, keepdim=True).clamp_min(1)
        values = torch.where(finite, scores, torch.zeros_like(scores))
        mean = values.sum(dim=-1, keepdim=True) / count
        var = (torch.where(finite, (scores - mean) ** 2, torch.zeros_like(scores))).sum(dim=-1, keepdim=True) / count
        threshold = scores.max(dim=-1, keepdim=True).values - self.n * var.sqrt()
        return _mask(scores, scores < threshold)
