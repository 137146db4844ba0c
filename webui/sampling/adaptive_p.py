"""adaptive-p: pick tokens whose probability is near a target, steered over time (llama.cpp PR 17927,
also in text-generation-webui, KoboldCpp and TabbyAPI)."""

from __future__ import annotations

import torch

from webui.sampling.tensor_ops import sample_from


class AdaptiveP:
    """Reshape the distribution to favour tokens whose probability is near an adapted target, then draw.

    The adapted target is 2 * target - (moving average of the *original* probability of the tokens picked
    so far), clamped to [0, 1]: after a run of very likely picks it aims lower, after unlikely ones higher,
    so the picks average `target`. The average decays by `decay` per token (memory of about
    1 / (1 - decay) tokens) and starts as if the target had always been met. Each candidate's new logit is
    PEAK - SHARPNESS * d^2 / (1 + d), with d = |p - adapted_target| / WIDTH: quadratic near the target,
    linear in the tails. Removed tokens (-inf) stay removed.

    Like mirostat it picks the token, so the Sampler runs it last; `keep` is the reshaped distribution
    (what the logits inspector shows) and `choose` draws from it and updates the average."""

    name = "adaptive_p"
    WIDTH, PEAK, SHARPNESS = 0.3, 5.0, 10.0

    def __init__(self, target: float, decay: float, generator: torch.Generator):
        if not 0 < target <= 1 or not 0 <= decay <= 0.99:
            raise ValueError(
                f"adaptive_p needs 0 < adaptive_target <= 1 and 0 <= adaptive_decay <= 0.99, got {target}, {decay}"
            )
        self.target, self.decay, self.generator = target, decay, generator
        self.weighted_sum = target / (1 - decay)
        self.total_weight = 1 / (1 - decay)

    @property
    def adapted_target(self) -> float:
        return min(max(2 * self.target - self.weighted_sum / self.total_weight, 0.0), 1.0)

    def keep(self, scores: torch.Tensor) -> torch.Tensor:
        """1-D logits -> the reshaped 1-D logits adaptive-p draws from."""
        return self._reshape(scores, torch.softmax(scores.float(), dim=-1))

    def _reshape(self, scores: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        distance = (probs - self.adapted_target).abs_().div_(self.WIDTH)
        reshaped = self.PEAK - self.SHARPNESS * distance.square() / (1 + distance)
        return torch.where(torch.isfinite(scores), reshaped, scores)

    def choose(self, scores: torch.Tensor) -> int:
        probs = torch.softmax(scores.float(), dim=-1)
        token = sample_from(self._reshape(scores, probs), self.generator)
        self.observe(float(probs[token]))
        return token

    def observe(self, original_probability: float) -> None:
        """Fold the picked token's probability before reshaping into the moving average."""
        self.weighted_sum = original_probability + self.decay * self.weighted_sum
        self.total_weight = 1 + self.decay * self.total_weight
