"""Mirostat 1 and 2: adaptive truncation that keeps the text's surprise near a target."""

from __future__ import annotations

import math

import torch

from webui.sampling.tensor_ops import log_normalizer, remove_below, row_max, sample_from


class Mirostat:
    """Pick tokens so the observed surprise (-log2 p of the picked token) tracks the target `tau`.

    It keeps its own state `mu` (starting at 2 * tau) for one generation, so a Sampler makes a new one
    per request. v2 keeps the tokens with surprise <= mu (a threshold: no sort); v1 estimates the Zipf
    exponent s from the top `m` tokens and keeps the top k = ((e * 2^mu) / (1 - N^-e))^(1/s), e = s - 1.
    `choose` then samples from the renormalised survivors and updates mu -= eta * (surprise - tau).

    Mirostat picks the token, so the Sampler always runs it last, after every other sampler (whatever
    its place in sampler_priority and even with temperature_last); `keep` is what it samples from,
    which the logits inspector shows. With greedy decoding it is not used."""

    name = "mirostat"

    def __init__(self, mode: int, tau: float, eta: float, generator: torch.Generator, m: int = 100):
        if mode not in (1, 2):
            raise ValueError(f"mirostat_mode must be 1 or 2, got {mode}")
        if tau < 0 or eta < 0:
            raise ValueError(f"mirostat_tau and mirostat_eta must be >= 0, got {tau}, {eta}")
        self.mode, self.tau, self.eta, self.m = mode, tau, eta, m
        self.generator = generator
        self.mu = 2 * tau

    def keep(self, scores: torch.Tensor) -> torch.Tensor:
        """1-D logits -> 1-D logits with the tokens mirostat would not consider set to -inf."""
        top = row_max(scores)
        if self.mode == 2:
            # -log2 p_i <= mu  <=>  logit_i >= logsumexp - mu * ln 2
            threshold = log_normalizer(scores, top) - self.mu * math.log(2)
            return remove_below(scores, torch.minimum(threshold, top))
        k = self._zipf_k(scores)
        if k >= scores.shape[-1]:
            return scores
        return remove_below(scores, torch.topk(scores, k).values[-1:])

    def _zipf_k(self, scores: torch.Tensor) -> int:
        """k from s estimated over the m - 1 ratios of the top m probabilities, N the vocabulary size
        (as the mirostat paper's code and llama.cpp)."""
        live = int(torch.isfinite(scores).sum())
        n = scores.shape[-1]
        pairs = min(self.m - 1, live - 1)
        if pairs < 1:
            return 1
        top = torch.topk(torch.softmax(scores.double(), dim=-1), pairs + 1).values
        i = torch.arange(pairs, dtype=torch.float64)
        t = torch.log((i + 2) / (i + 1))
        b = torch.log(top[:-1].clamp_min(1e-300) / top[1:].clamp_min(1e-300))
        s_hat = float((t * b).sum() / (t * t).sum())
        epsilon = s_hat - 1
        if abs(epsilon) < 1e-9 or s_hat <= 0:
            return n
        k = ((epsilon * 2**self.mu) / (1 - n ** (-epsilon))) ** (1 / s_hat)
        return int(min(max(k, 1), n)) if math.isfinite(k) else n

    def choose(self, scores: torch.Tensor) -> int:
        kept = self.keep(scores)
        token = sample_from(kept, self.generator)
        self.observe(kept, token)
        return token

    def observe(self, kept: torch.Tensor, token: int) -> None:
        """Move mu by the surprise of `token` among the tokens `keep` left."""
        log_p = float(kept[token] - log_normalizer(kept))
        self.mu -= self.eta * (-log_p / math.log(2) - self.tau)
