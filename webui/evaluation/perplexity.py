"""Sliding-window perplexity, as in Hugging Face's perplexity guide and text-generation-webui's evaluate.

The text is tokenized once (with BOS at its start). Windows of at most `max_length` tokens start every
`stride` tokens; each token is scored once, in the first window that reaches it, so every token after the
first window has at least `max_length - stride` tokens of context. The first window is scored whole (all
but its first token, which nothing predicts): with N tokens, N - 1 are scored, whatever the stride.
Perplexity is exp(mean negative log-likelihood) over those tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from webui.loader_api import Model


@dataclass(frozen=True)
class Window:
    """Tokens [begin, end) are fed; targets [first_target, end) are scored (first_target > begin)."""

    begin: int
    end: int
    first_target: int

    @property
    def targets(self) -> int:
        return self.end - self.first_target


def sliding_windows(n_tokens: int, stride: int, max_length: int) -> list[Window]:
    """The windows covering `n_tokens` tokens, each target in exactly one of them."""
    if stride < 1 or max_length < 2 or stride > max_length:
        raise ValueError(f"need 1 <= stride <= max_length and max_length >= 2 (got {stride}, {max_length})")
    windows: list[Window] = []
    scored_until = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_length, n_tokens)
        first = max(scored_until, begin + 1)
        if end > first:
            windows.append(Window(begin, end, first))
        scored_until = end
        if end == n_tokens:
            break
    return windows


def window_log_probs(model: Model, ids: Sequence[int], window: Window) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities ([targets, vocab], float32) predicting each target of `window`, and the targets."""
    logits = model.sequence_logits(ids[window.begin : window.end])
    start = window.first_target - 1 - window.begin  # row i predicts token begin + i + 1
    rows = logits[start : start + window.targets].float()
    targets = torch.tensor(ids[window.first_target : window.end], dtype=torch.long)
    return torch.log_softmax(rows, dim=-1), targets


def negative_log_likelihood(log_probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Sum over targets of -log p(target), in float64."""
    return -float(log_probs.gather(1, targets[:, None]).double().sum())


@dataclass
class Totals:
    """Running sums over the scored tokens of one model."""

    nll: float = 0.0
    tokens: int = 0
    kl: float = 0.0
    agree: int = 0

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")

    @property
    def mean_kl(self) -> float:
        return self.kl / self.tokens if self.tokens else float("nan")

    @property
    def top1_agreement(self) -> float:
        return self.agree / self.tokens if self.tokens else float("nan")
