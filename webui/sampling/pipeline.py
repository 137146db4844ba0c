"""Building the ordered sampler chain from SamplingParams, and picking a token with it.

Order is data: `SamplingParams.active_samplers()` gives the names in order, and each name maps to one
processor here. Neutral settings add nothing, so the common case costs only the samplers in use.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from webui.sampling.params import SamplingParams
from webui.sampling.penalties import (
    DRY,
    EncoderRepetitionPenalty,
    NoRepeatNGram,
    PresenceFrequencyPenalty,
    RepetitionPenalty,
)
from webui.sampling.special import XTC, LogitBias, Mirostat, sample_from
from webui.sampling.temperature import DynamicTemperature, QuadraticSmoothing, Temperature
from webui.sampling.truncation import (
    EpsilonCutoff,
    EtaCutoff,
    MinP,
    TailFree,
    TopA,
    TopK,
    TopNSigma,
    TopP,
    TypicalP,
)

Processor = Callable[[torch.LongTensor, torch.FloatTensor], torch.FloatTensor]


def sequence_breaker_ids(breakers: Iterable[str], encode: Callable[[str], list[int]] | None) -> set[int]:
    """Token ids of DRY's sequence breakers: the last token of 'a' + breaker, as text-generation-webui
    does, so a breaker is looked up as it appears mid-text rather than at the start of a sequence."""
    if encode is None:
        return set()
    ids = set()
    for breaker in breakers:
        tokens = encode("a" + breaker)
        if tokens:
            ids.add(tokens[-1])
    return ids


@dataclass
class Sampler:
    """An ordered list of logits processors plus the final pick (greedy, mirostat or multinomial)."""

    processors: list[tuple[str, Processor]]
    generator: torch.Generator
    seed: int
    greedy: bool = False
    mirostat: Mirostat | None = None
    names: list[str] = field(default_factory=list)

    def process(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for _, processor in self.processors:
            scores = processor(input_ids, scores)
        return scores

    def choose(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> int:
        """Run the chain on [1, vocab] scores and pick one token id."""
        scores = self.process(input_ids, scores)
        if self.greedy:
            return int(scores[0].argmax())
        if self.mirostat is not None:
            return self.mirostat.choose(scores[0])
        return sample_from(scores[0], self.generator)

    def probabilities(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        """The distribution `choose` samples from (1-D), for the logits inspector."""
        scores = self.process(input_ids, scores)[0].float()
        if self.greedy:
            probs = torch.zeros_like(scores)
            probs[scores.argmax()] = 1.0
            return probs
        if self.mirostat is not None:
            scores = self.mirostat.keep(scores)
        return torch.softmax(scores, dim=-1)


def build_sampler(params: SamplingParams, *, vocab_size: int, eos_token_ids: Iterable[int], prompt_ids: Sequence[int] = (),
                  encode: Callable[[str], list[int]] | None = None, extra_processors: Sequence[Any] = ()) -> Sampler:
    """The Sampler for one generation (fresh mirostat state, generator seeded from params.seed)."""
    seed = params.seed if params.seed >= 0 else random.randrange(2**31)
    generator = torch.Generator().manual_seed(seed)
    eos = set(eos_token_ids)
    processors: list[tuple[str, Processor]] = []
    bias = dict(params.logit_bias)
    bias.update({t: float("-inf") for t in params.custom_token_bans})
    if params.ban_eos_token:
        bias.update({t: float("-inf") for t in eos})
    if bias:
        processors.append(("logit_bias", LogitBias(bias, vocab_size)))
    mirostat = None
    penalty_done = False
    for name in params.active_samplers():
        if params.greedy and name in _NO_EFFECT_WHEN_GREEDY:
            continue
        if name == "mirostat":
            mirostat = Mirostat(params.mirostat_mode, params.mirostat_tau, params.mirostat_eta, generator)
            continue
        if name in ("presence_penalty", "frequency_penalty"):
            if penalty_done:
                continue
            penalty_done = True
        processors.append((name, _make(name, params, generator, prompt_ids, encode, eos)))
    processors.extend((type(p).__name__, p) for p in extra_processors)
    return Sampler(processors, generator, seed, params.greedy, mirostat, [n for n, _ in processors])


#: With greedy decoding these cannot change the argmax (or are random): skipped.
_NO_EFFECT_WHEN_GREEDY = frozenset({
    "temperature", "dynamic_temperature", "quadratic_sampling", "top_n_sigma", "top_k", "top_p", "typical_p",
    "epsilon_cutoff", "eta_cutoff", "tfs", "top_a", "min_p", "mirostat", "xtc",
})


def _make(name: str, p: SamplingParams, generator: torch.Generator, prompt_ids: Sequence[int],
          encode: Callable[[str], list[int]] | None, eos: set[int]) -> Processor:
    if name == "repetition_penalty":
        return RepetitionPenalty(p.repetition_penalty, p.repetition_penalty_range)
    if name in ("presence_penalty", "frequency_penalty"):
        return PresenceFrequencyPenalty(p.presence_penalty, p.frequency_penalty, p.repetition_penalty_range)
    if name == "dry":
        breakers = sequence_breaker_ids(p.dry_sequence_breakers, encode)
        return DRY(p.dry_multiplier, p.dry_base, p.dry_allowed_length, breakers, p.dry_penalty_last_n)
    if name == "xtc":
        newline = encode("a\n")[-1:] if encode else []
        return XTC(p.xtc_threshold, p.xtc_probability, generator, protected=[*eos, *newline])
    simple: dict[str, Callable[[], Processor]] = {
        "temperature": lambda: Temperature(p.temperature),
        "dynamic_temperature": lambda: DynamicTemperature(p.dynatemp_low, p.dynatemp_high, p.dynatemp_exponent),
        "quadratic_sampling": lambda: QuadraticSmoothing(p.smoothing_factor, p.smoothing_curve),
        "top_n_sigma": lambda: TopNSigma(p.top_n_sigma),
        "top_k": lambda: TopK(p.top_k),
        "top_p": lambda: TopP(p.top_p),
        "typical_p": lambda: TypicalP(p.typical_p),
        "epsilon_cutoff": lambda: EpsilonCutoff(p.epsilon_cutoff),
        "eta_cutoff": lambda: EtaCutoff(p.eta_cutoff),
        "tfs": lambda: TailFree(p.tfs),
        "top_a": lambda: TopA(p.top_a),
        "min_p": lambda: MinP(p.min_p),
        "encoder_repetition_penalty": lambda: EncoderRepetitionPenalty(p.encoder_repetition_penalty, prompt_ids),
        "no_repeat_ngram": lambda: NoRepeatNGram(p.no_repeat_ngram_size),
    }
    return simple[name]()
