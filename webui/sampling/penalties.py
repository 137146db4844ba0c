"""Penalties on tokens already seen: repetition, presence/frequency, encoder repetition, n-gram ban.

They act on the token ids, so their cost scales with the context (or the range), not the vocabulary:
each touches only the ids it penalises. DRY has its own module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _window(input_ids: torch.LongTensor, last_n: int) -> torch.LongTensor:
    return input_ids[:, -last_n:] if last_n > 0 else input_ids


class RepetitionPenalty:
    """CTRL-style: a seen token's logit is divided by the penalty if positive, multiplied if negative.
    Only the last `last_n` tokens count (0 = all). A token seen several times is penalised once."""

    name = "repetition_penalty"

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
    """OpenAI's formula: logit -= presence * [count > 0] + frequency * count, over the last `last_n` tokens
    (repetition_penalty_range, as text-generation-webui). The Sampler makes one for presence_penalty and
    one for frequency_penalty, each at its own place in the order; one object can also do both."""

    def __init__(self, presence: float, frequency: float, last_n: int = 0):
        self.presence, self.frequency, self.last_n = presence, frequency, last_n
        self.name = (
            "presence_penalty"
            if frequency == 0
            else "frequency_penalty"
            if presence == 0
            else "presence_frequency"
        )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen = _window(input_ids, self.last_n)
        out = scores.clone()
        for row in range(scores.shape[0]):
            ids, counts = torch.unique(seen[row], return_counts=True)
            penalty = self.presence + self.frequency * counts.to(scores.dtype)
            out[row].index_add_(0, ids, -penalty)
        return out


class EncoderRepetitionPenalty:
    """The opposite of a repetition penalty for the prompt's tokens: penalty > 1 makes the model more
    likely to reuse words from its prompt (text-generation-webui's 'hallucinations filter'): a prompt
    token's logit is multiplied by the penalty if positive, divided if negative."""

    name = "encoder_repetition_penalty"

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
    """Ban any token that would complete an n-gram already present in the sequence (prompt included, as
    transformers' NoRepeatNGramLogitsProcessor): the last n-1 tokens are looked up among all earlier
    (n-1)-grams and the tokens that followed them get -inf."""

    name = "no_repeat_ngram"

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"no_repeat_ngram_size must be >= 1, got {n}")
        self.n = n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores
        for row in range(input_ids.shape[0]):
            tokens = input_ids[row].cpu().numpy()
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
