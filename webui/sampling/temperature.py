"""Samplers that reshape the whole distribution: temperature, dynamic temperature, quadratic smoothing.

Each is a transformers-compatible logits processor: `__call__(input_ids, scores) -> scores`.
"""

from __future__ import annotations

import math

import torch


class Temperature:
    """logits / T: T < 1 sharpens the distribution, T > 1 flattens it. T = 0 (greedy) is not a
    processor: the Sampler takes the argmax instead."""

    name = "temperature"

    def __init__(self, temperature: float):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 here (0 means greedy), got {temperature}")
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores / self.temperature


class DynamicTemperature:
    """Entropy-scaled temperature (as KoboldCpp and text-generation-webui): a confident distribution
    (low entropy) gets a temperature near `low`, an uncertain one near `high`.

    T = low + (high - low) * (H / H_max) ** exponent, with H the entropy over tokens still possible and
    H_max = log(number of such tokens). It replaces the plain temperature when enabled."""

    name = "dynamic_temperature"

    def __init__(self, low: float, high: float, exponent: float):
        if not 0 <= low <= high:
            raise ValueError(f"dynatemp_low ({low}) must be between 0 and dynatemp_high ({high})")
        if exponent <= 0:
            raise ValueError(f"dynatemp_exponent must be > 0, got {exponent}")
        self.low, self.high, self.exponent = low, high, exponent

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        valid = torch.isfinite(scores)
        count = int(valid.sum())
        if count <= 1:
            return scores
        probs = torch.softmax(scores, dim=-1)
        logp = torch.log_softmax(scores, dim=-1)
        entropy = -(torch.where(valid, probs * logp, torch.zeros_like(probs))).sum(dim=-1, keepdim=True)
        normalized = (entropy / math.log(count)).clamp(0, 1)
        temperature = self.low + (self.high - self.low) * normalized.pow(self.exponent)
        return scores / temperature.clamp_min(1e-4)


class QuadraticSmoothing:
    """Quadratic (and cubic, with smoothing_curve > 1) sampling, as text-generation-webui defines it.

    With d = logit - max_logit (<= 0): new_logit = -k * f * d^2 + s * f * d^3, where f = smoothing_factor,
    k = (3 - curve) / 2 and s = (curve - 1) / 2. Small f flattens the top of the distribution; large f
    makes it sharper while keeping the order of tokens. Removed tokens (-inf) stay removed."""

    name = "quadratic_sampling"

    def __init__(self, factor: float, curve: float = 1.0):
        if factor <= 0:
            raise ValueError(f"smoothing_factor must be > 0, got {factor}")
        self.factor, self.curve = factor, curve

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        diff = scores - scores.amax(dim=-1, keepdim=True)
        k = (3 - self.curve) / 2
        s = (self.curve - 1) / 2
        transformed = diff.square().mul_(-k * self.factor)
        if s == 0:
            return transformed  # -inf stays -inf; no 0 * inf term
        transformed += diff.pow(3).mul_(s * self.factor)
        return torch.where(torch.isfinite(scores), transformed, scores)
