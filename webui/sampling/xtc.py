"""XTC, "Exclude Top Choices": sometimes remove the most likely tokens to leave the predictable path."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class XTC:
    """With probability `probability` (a coin flip on the Sampler's generator, so a seed replays it),
    remove every token whose probability is at least `threshold` except the least likely of them.
    Nothing happens unless two or more tokens pass the threshold, so there is always a token left.

    As text-generation-webui does, the step is skipped when it would remove a protected token (EOS,
    newline): replies must still be able to end and paragraphs to break. At most 1/threshold tokens can
    pass the threshold, so a topk of that size replaces a sort."""

    name = "xtc"

    def __init__(
        self, threshold: float, probability: float, generator: torch.Generator, protected: Iterable[int] = ()
    ):
        if not 0 <= threshold <= 0.5 or not 0 < probability <= 1:
            raise ValueError(
                f"XTC needs 0 <= threshold <= 0.5 and 0 < probability <= 1, got {threshold}, {probability}"
            )
        self.threshold, self.probability, self.generator = threshold, probability, generator
        self.protected = set(protected)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if torch.rand(1, generator=self.generator).item() >= self.probability:
            return scores
        out = scores
        k = min(scores.shape[-1], int(1 / self.threshold) + 1) if self.threshold > 0 else scores.shape[-1]
        for row in range(scores.shape[0]):
            values, order = torch.topk(torch.softmax(scores[row], dim=-1), k)
            above = int((values >= self.threshold).sum())
            if above < 2:
                continue
            remove = order[: above - 1]  # all but the least likely of them
            if self.protected.intersection(remove.tolist()):
                continue
            out = scores.clone() if out is scores else out
            out[row, remove] = float("-inf")
        return out
