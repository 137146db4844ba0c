"""KL divergence of a candidate model against a reference model, on the same windows of the same text.

The reference runs first; for every scored token it keeps its top-k log-probabilities and their ids
(`KL_TOP_K`, 8 bytes each: 512 bytes a token, 50 MB for 100k tokens) instead of the whole distribution
(128 KB a token with a 32k vocabulary: 13 GB for 100k tokens, too much for memory and slow on disk).
The rest of the vocabulary is one "other" bucket whose mass both models know exactly (1 - their top-k
mass), so the figure is the KL of the two distributions over k + 1 outcomes:

    KL(ref || cand) ~= sum_top-k p_i (log p_i - log q_i) + p_rest (log p_rest - log q_rest)

It is exact when the reference puts all its mass in its top k, never above the full KL, 0 for a model
against itself, and within a small fraction of the full KL when the tail holds little mass, which is
what a quant against its original shows (tests compare it with the full sum). Top-1 agreement is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KL_TOP_K = 64


@dataclass
class ReferenceWindow:
    """The reference's view of one window: top-k log-probs and ids per scored token."""

    top_log_probs: torch.Tensor  # [targets, k] float32, best first
    top_ids: torch.Tensor  # [targets, k] int32

    @property
    def nbytes(self) -> int:
        return self.top_log_probs.numel() * 4 + self.top_ids.numel() * 4


def keep_reference(log_probs: torch.Tensor, k: int = KL_TOP_K) -> ReferenceWindow:
    top = torch.topk(log_probs, min(k, log_probs.shape[-1]), dim=-1)
    return ReferenceWindow(top.values.float().contiguous(), top.indices.to(torch.int32))


def compare(reference: ReferenceWindow, log_probs: torch.Tensor) -> tuple[float, int]:
    """(sum over tokens of KL(ref || cand), tokens where both models' most likely token is the same)."""
    if log_probs.shape[0] != reference.top_ids.shape[0]:
        raise ValueError("the candidate scored another number of tokens than the reference")
    ids = reference.top_ids.long()
    lp = reference.top_log_probs.double()
    lq = log_probs.gather(1, ids).double()
    p = lp.exp()
    # 1 - (sum of k float32 probabilities) is only known to about k float32 epsilons: below that a rest
    # mass is rounding, not probability (else a reference keeping the whole vocabulary would divide by 0)
    noise = ids.shape[1] * float(torch.finfo(torch.float32).eps)
    p_rest = 1.0 - p.sum(1)
    p_rest = torch.where(p_rest > noise, p_rest, 0.0)
    q_rest = (1.0 - lq.exp().sum(1)).clamp(min=noise)
    kl = (p * (lp - lq)).sum(1) + torch.xlogy(p_rest, p_rest) - torch.xlogy(p_rest, q_rest)
    agree = int((ids[:, 0] == log_probs.argmax(dim=-1)).sum())
    return float(kl.sum()), agree
