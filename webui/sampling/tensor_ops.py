"""Fast tensor helpers shared by the samplers: removing tokens, the log-normaliser, drawing one token.

They exist for speed. On a 152k vocabulary and one CPU thread, `masked_fill` and `torch.where` with a
boolean mask run a scalar loop (~0.6 ms), `max(dim=...)` also computes indices (~0.2 ms), and a full sort
costs ~15 ms, while plain arithmetic on the whole vector costs ~0.02 ms a pass. So truncation here is
arithmetic against a per-row threshold, and nothing sorts unless its math needs an order.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")
# (3e38)^3 overflows float32 (and float64) to +inf; any positive float32 gap, even a denormal, times it is inf.
_HUGE = 3e38


def remove_below(scores: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """A new tensor: `scores` where scores >= threshold, -inf elsewhere (threshold broadcasts, e.g. [b, 1]).

    Same result as `scores.masked_fill(scores < threshold, -inf)` but ~5x faster: the gap
    max(threshold - score, 0) is 0 for kept tokens and becomes +inf when scaled past the float range,
    so subtracting it leaves kept scores exactly unchanged and turns the others into -inf (no NaN, as
    the gap of a kept token is exactly 0). Callers keep threshold <= the row maximum, so one token stays.
    A threshold of -inf (top_k asking for more tokens than earlier samplers left) keeps every finite
    score: it is raised to the lowest float first, as -inf - -inf would be NaN.
    """
    threshold = torch.as_tensor(threshold, dtype=scores.dtype).clamp(min=torch.finfo(scores.dtype).min)
    gap = torch.sub(threshold, scores).clamp_(min=0)
    gap.mul_(_HUGE).mul_(_HUGE).mul_(_HUGE)
    return gap.neg_().add_(scores)


def row_max(scores: torch.Tensor) -> torch.Tensor:
    """Max over the vocabulary, [b, 1] (amax: no indices, much cheaper than max(dim=...))."""
    return scores.amax(dim=-1, keepdim=True)


def log_normalizer(scores: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
    """log(sum(exp(scores))) per row, [b, 1], so that log p_i = score_i - log_normalizer.

    Computed as top - log(p_max) from the softmax: torch's softmax kernel is vectorised, while a bare
    exp (and so logsumexp) is ~5x slower on CPU. p_max >= 1/vocab, so its log is accurate."""
    top = row_max(scores) if top is None else top
    return top - torch.softmax(scores, dim=-1).amax(dim=-1, keepdim=True).log_()


def sample_from(
    scores: torch.Tensor, generator: torch.Generator, chunk: int = 1024, whole_below: int = 65536
) -> int:
    """Draw one token from softmax(scores) of a 1-D tensor: inverse CDF with one uniform number.

    torch.multinomial costs ~3 ms on 152k tokens. Up to `whole_below` tokens (a 32k vocabulary) one
    cumsum over all weights is cheapest; on larger vocabularies, where a full cumsum (a sequential pass)
    dominates, the weights are summed per chunk of `chunk` tokens (vectorised), the chunk is found on the
    short CDF of chunk sums, and only that chunk is cumsummed. A token of probability 0 is never drawn:
    its CDF step is empty, and a rounding overshoot falls back to the last token of weight > 0.
    The weights come from softmax, whose kernel is vectorised (a bare exp is ~5x slower on CPU)."""
    weights = torch.softmax(scores.float(), dim=-1)
    if weights.shape[0] <= whole_below:
        return _inverse_cdf(weights, generator)
    full = weights.shape[0] // chunk * chunk
    sums = weights[:full].view(-1, chunk).sum(dim=1)
    if full < weights.shape[0]:
        sums = torch.cat([sums, weights[full:].sum().view(1)])
    cdf = sums.cumsum_(dim=0)
    u = torch.rand(1, generator=generator, dtype=cdf.dtype) * cdf[-1]
    c = min(int(torch.searchsorted(cdf, u, right=True)), cdf.shape[0] - 1)
    part = weights[c * chunk : (c + 1) * chunk]
    offset = u - cdf[c - 1] if c > 0 else u
    return c * chunk + _inverse_cdf(part, None, offset)


def _inverse_cdf(weights: torch.Tensor, generator: torch.Generator | None, u: torch.Tensor | None = None) -> int:
    """The index where the running sum of `weights` first exceeds `u` (uniform over the total if None)."""
    cdf = weights.cumsum(dim=0)
    if u is None:
        u = torch.rand(1, generator=generator, dtype=cdf.dtype) * cdf[-1]
    i = int(torch.searchsorted(cdf, u, right=True))
    if i >= weights.shape[0]:
        i = int(weights.nonzero().max())
    return i
