"""Small helpers shared by the sampler tests: hand-made distributions and what survives truncation."""

from __future__ import annotations

import torch

INF = float("-inf")
IDS = torch.tensor([[0]])
P = [0.5, 0.25, 0.15, 0.07, 0.03]


def logits_for(probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly `probs`."""
    return torch.log(torch.tensor([probs], dtype=torch.float64)).float()


def kept(scores: torch.Tensor) -> list[int]:
    """Token ids a processor left finite."""
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()
