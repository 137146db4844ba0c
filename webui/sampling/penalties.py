"""Penalties on tokens already seen: repetition, presence/frequency, encoder repetition, n-gram ban, DRY."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch


def _window(input_ids: torch.LongTensor, last_n: int) -> torch.LongTensor:
    return input_ids[:, -last_n:] if last_n > 0 else input_ids


class RepetitionPenalty:
    """CTRL-style: a seen token's logit is divided by the penalty if positive, multiplied if negative.
    Only the last `last_n` tokens count (0 = all)."""

    def __init__(self, penalty: float, last_n: int = 0):
        if penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
        self.penalty, self.last_n = penalty, last_n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen = _window(input_ids, self.last_n)
        picked = scores.gather(-1, seen)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores.scatter(-1, seen, picked)


class PresenceFrequencyPenalty:
    """OpenAI's formula: logit -= presence * [count > 0] + frequency * count, over the last `last_n` tokens."""

    def __init__(self, presence: float, frequency: float, last_n: int = 0):
        self.presence, self.frequency, self.last_n = presence, frequency, last_n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen = _window(input_ids, self.last_n)
        out = scores.clone()
        for row in range(scores.shape[0]):
            counts = torch.bincount(seen[row], minlength=scores.shape[-1])[: scores.shape[-1]].to(scores.dtype)
            out[row] -= self.presence * (counts > 0).to(scores.dtype) + self.frequency * counts
        return out


class EncoderRepetitionPenalty:
    """The opposite of a repetition penalty for the prompt's tokens: penalty > 1 makes the model more
    likely to reuse words from its prompt (text-generation-webui's 'hallucinations filter')."""

    def __init__(self, penalty: float, prompt_ids: Sequence[int]):
        if penalty <= 0:
            raise ValueError(f"encoder_repetition_penalty must be > 0, got {penalty}")
        self.penalty = penalty
        self.prompt = torch.tensor(sorted(set(prompt_ids)), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not len(self.prompt):
            return scores
        picked = scores[..., self.prompt]
        picked = torch.where(picked < 0, picked / self.penalty, picked * self.penalty)
        out = scores.clone()
        out[..., self.prompt] = picked
        return out


class NoRepeatNGram:
    """Ban any token that would complete an n-gram already present in the sequence."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"no_repeat_ngram_size must be >= 1, got {n}")
        self.n = n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores
        for row in range(input_ids.shape[0]):
            tokens = input_ids[row].numpy()
            banned = _ngram_followers(tokens, self.n)
            if banned:
                if out is scores:
                    out = scores.clone()
                out[row, list(banned)] = float("-inf")
        return out


def _ngram_followers(tokens: np.ndarray, n: int) -> set[int]:
    if len(tokens) < n:
        return set()
    if n == 1:
        return set(tokens.tolist())
    prefix = tokens[len(tokens) - n + 1 :]
    windows = np.lib.stride_tricks.sliding_window_view(tokens[:-1], n - 1)
    hits = np.nonzero((windows == prefix).all(axis=1))[0]
    return {int(tokens[i + n - 1]) for i in hits}


class DRY:
    """DRY ("Don't Repeat Yourself"): penalise the token that would extend a repeat of an earlier sequence.

    If the last L tokens also occurred earlier followed by token t, and L >= allowed_length, then
    logit[t] -= multiplier * base ** (L - allowed_length). Sequence breakers (newline, ':', ...) stop a
    match, so formatting that must repeat is not penalised."""

    MAX_MATCH = 50

    def __init__(self, multiplier: float, base: float, allowed_length: int, breakers: Iterable[int], last_n: int = 0):
        if multiplier <= 0 or base < 1 or allowed_length < 1:
            raise ValueError("DRY needs multiplier > 0, base >= 1 and allowed_length >= 1")
        self.multiplier, self.base, self.allowed = multiplier, base, allowed_length
        self.breakers = np.array(sorted(set(breakers)), dtype=np.int64)
        self.last_n = last_n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores
        for row in range(input_ids.shape[0]):
            penalties = self.penalties(_window(input_ids, self.last_n)[row].numpy())
            if penalties:
                if out is scores:
                    out = scores.clone()
                ids = torch.tensor(list(penalties), dtype=torch.long)
                out[row, ids] -= torch.tensor(list(penalties.values()), dtype=scores.dtype)
        return out

    def penalties(self, tokens: np.ndarray) -> dict[int, float]:
        """Token id -> penalty for one sequence."""
        if len(tokens) < 2:
            return {}
        is_breaker = np.isin(tokens, self.breakers)
        if is_breaker[-1]:
            return {}
        last = tokens[-1]
        candidates = np.nonzero(tokens[:-1] == last)[0]
        lengths: dict[int, int] = {}
        end = len(tokens) - 1
        for idx in candidates[::-1]:
            follower = int(tokens[idx + 1])
            if is_breaker[idx + 1]:
                continue
            length = 1
            while length < self.MAX_MATCH and idx - length >= 0:
                a, b = idx - length, end - length
                if tokens[a] != tokens[b] or is_breaker[b]:
                    break
                length += 1
            if length >= self.allowed and length > lengths.get(follower, 0):
                lengths[follower] = length
        return {t: self.multiplier * self.base ** (n - self.allowed) for t, n in lengths.items()}
