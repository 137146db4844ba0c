"""Samplers with state or randomness of their own: logit bias and bans, XTC, mirostat 1 and 2."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch


def sample_from(scores: torch.Tensor, generator: torch.Generator) -> int:
    """Draw one token from softmax(scores): inverse CDF, one uniform number.

    Cheaper than torch.multinomial on a large vocabulary (one cumsum and a binary search). A token with
    probability 0 is never drawn: its CDF step is empty."""
    cdf = torch.softmax(scores.float(), dim=-1).cumsum(dim=-1)
    u = torch.rand(1, generator=generator) * cdf[-1]
    return min(int(torch.searchsorted(cdf, u, right=True)), scores.shape[-1] - 1)


class LogitBias:
    """Add a fixed bias to chosen tokens; a bias of -inf bans a token (custom_token_bans, ban EOS)."""

    def __init__(self, bias: Mapping[int, float], vocab_size: int):
        items = {int(t): float(b) for t, b in bias.items() if 0 <= int(t) < vocab_size}
        self.ids = torch.tensor(list(items), dtype=torch.long)
        self.values = torch.tensor(list(items.values()), dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not len(self.ids):
            return scores
        out = scores.clone()
        out[..., self.ids] += self.values.to(scores.dtype)
        return out


class XTC:
    """Exclude Top Choices: with probability `probability`, remove every token whose probability is at
    least `threshold` except the least likely of them, pushing the text off its most predictable path.
    Nothing happens unless two or more tokens pass the threshold. EOS and newline are never removed
    (as text-generation-webui does), so replies still end and paragraphs still break."""

    def __init__(self, threshold: float, probability: float, generator: torch.Generator, protected: Iterable[int] = ()):
        if not 0 <= threshold <= 0.5 or not 0 < probability <= 1:
            raise ValueError("XTC needs 0 <= threshold <= 0.5 and 0 < probability <= 1")
        self.threshold, self.probability, self.generator = threshold, probability, generator
        self.protected = torch.tensor(sorted(set(protected)), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if torch.rand(1, generator=self.generator).item() >= self.probability:
            return scores
        probs = torch.softmax(scores, dim=-1)
        above = probs >= self.threshold
        if int(above.sum()) < 2:
            return scores
        least = torch.where(above, probs, torch.full_like(probs, 2.0)).argmin(dim=-1, keepdim=True)
        remove = above.clone()
        remove.scatter_(-1, least, False)
        if len(self.protected):
            remove[..., self.protected] = False
        return scores.masked_fill(remove, float("-inf"))


class Mirostat:
    """Mirostat 1 and 2: pick tokens so the observed surprise (-log2 p) tracks the target `tau`.

    It keeps its own state `mu` (starting at 2 * tau) for one generation, so a Sampler makes a new one
    per request. v2 keeps the tokens with surprise below mu; v1 estimates the Zipf exponent from the top
    `m` tokens and keeps the top k that give surprise mu. Both then sample and update
    mu -= eta * (surprise - tau), the surprise measured on the truncated, renormalised distribution."""

    def __init__(self, mode: int, tau: float, eta: float, generator: torch.Generator, m: int = 100):
        if mode not in (1, 2):
            raise ValueError(f"mirostat_mode must be 1 or 2, got {mode}")
        self.mode, self.tau, self.eta, self.m = mode, tau, eta, m
        self.generator = generator
        self.mu = 2 * tau

    def keep(self, scores: torch.Tensor) -> torch.Tensor:
        """1-D logits -> 1-D logits with the tokens mirostat would not consider set to -inf."""
        sorted_logits, order = torch.sort(scores, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        if self.mode == 2:
            surprise = -torch.log2(probs)
            k = max(int((surprise <= self.mu).sum()), 1)
        else:
            k = self._zipf_k(probs)
        out = torch.full_like(scores, float("-inf"))
        out[order[:k]] = scores[order[:k]]
        return out

    def _zipf_k(self, probs: torch.Tensor) -> int:
        n = probs.shape[-1]
        m = min(self.m, n - 1)
        if m < 1:
            return 1
        top = probs[: m + 1].double().clamp_min(1e-30)
        i = torch.arange(m, dtype=torch.float64)
        t = torch.log((i + 2) / (i + 1))
        b = torch.log(top[:-1] / top[1:])
        s_hat = float((t * b).sum() / (t * t).sum())
        epsilon = s_hat - 1
        if abs(epsilon) < 1e-9:
            return n
        k = ((epsilon * 2**self.mu) / (1 - n ** (-epsilon))) ** (1 / s_hat)
        return int(min(max(k, 1), n)) if math.isfinite(k) else n

    def choose(self, scores: torch.Tensor) -> int:
        kept = self.keep(scores)
        probs = torch.softmax(kept, dim=-1)
        token = sample_from(kept, self.generator)
        surprise = -math.log2(max(float(probs[token]), 1e-30))
        self.mu -= self.eta * (surprise - self.tau)
        return token
