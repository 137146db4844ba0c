"""Building the ordered sampler chain from SamplingParams, and picking a token with it.

Order is data: `SamplingParams.active_samplers()` gives the names in order, and each name maps to one
processor here. Neutral settings add nothing, so the common case costs only the samplers in use.
The chain is: logit_bias (biases and bans, always first), the active samplers in order, then the
`extra_processors` (transformers' own LogitsProcessors or an extension's), then the pick: argmax when
greedy, else the picking sampler when one is on (mirostat or adaptive_p), else a draw from the softmax
with the Sampler's seeded generator.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from webui.sampling.adaptive_p import AdaptiveP
from webui.sampling.bias import LogitBias
from webui.sampling.dry import DRY
from webui.sampling.mirostat import Mirostat
from webui.sampling.params import SamplingError, SamplingParams
from webui.sampling.penalties import (
    EncoderRepetitionPenalty,
    NoRepeatNGram,
    PresenceFrequencyPenalty,
    RepetitionPenalty,
)
from webui.sampling.temperature import DynamicTemperature, QuadraticSmoothing, Temperature
from webui.sampling.tensor_ops import sample_from
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
from webui.sampling.vocabulary import Vocabulary
from webui.sampling.xtc import XTC

Processor = Callable[[torch.LongTensor, torch.FloatTensor], torch.FloatTensor]
Encode = Callable[[str], list[int]]


def sequence_breaker_ids(breakers: Iterable[str], encode: Encode | None) -> set[int]:
    """Token ids of DRY's sequence breakers: every id a breaker encodes to, as it appears mid-text.

    Each breaker is encoded after an 'a' (as text-generation-webui does) so that tokenizers which mark
    the start of a word or of the text give the id seen inside generated text; the ids that follow the
    encoding of 'a' alone are the breaker's. tgw keeps only the last id; we keep all of them, so a
    breaker that splits into several tokens (e.g. "###" or an emoji) stops a match at any of its pieces.
    If 'a' merges with the breaker into one token, that token is used. Without `encode`, no breakers."""
    if encode is None:
        return set()
    prefix = encode("a")
    ids: set[int] = set()
    for breaker in breakers:
        tokens = encode("a" + breaker)
        start = len(prefix) if tokens[: len(prefix)] == prefix else len(tokens) - 1
        ids.update(tokens[start:] or tokens[-1:])
    return ids


class Sampler:
    """One generation's ordered chain of logits processors plus the final pick.

    `processors` is the ordered list (each of ours has a `.name`; `names` lists them for debugging). Our
    processors never modify their input in place, and foreign ones (extensions', transformers') get a
    copy, so the caller's scores (possibly a model's cached logits) stay intact. Stateful parts
    (the picker's state: mirostat's mu, adaptive-p's average; the generator) belong to this object:
    build one Sampler per request."""

    def __init__(
        self,
        processors: list[Processor],
        generator: torch.Generator,
        seed: int,
        greedy: bool = False,
        picker: Mirostat | AdaptiveP | None = None,
    ):
        self.processors = processors
        self.generator = generator
        self.seed = seed
        self.greedy = greedy
        self.picker = picker

    @property
    def names(self) -> list[str]:
        names = [getattr(p, "name", type(p).__name__) for p in self.processors if not isinstance(p, _CopyScores)]
        return names + ([self.picker.name] if self.picker is not None else [])

    def __repr__(self) -> str:
        return f"Sampler(seed={self.seed}, greedy={self.greedy}, chain={self.names})"

    def process(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Run the chain on [batch, vocab] scores (half precision is widened to float32 first)."""
        if scores.dtype not in (torch.float32, torch.float64):
            scores = scores.float()
        for processor in self.processors:
            scores = processor(input_ids, scores)
        return scores

    def choose(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> int:
        """Run the chain on [1, vocab] scores (input_ids [1, seq]: prompt + generated) and pick one id."""
        scores = self.process(input_ids, scores)
        if self.greedy:
            return int(scores[0].argmax())
        if self.picker is not None:
            return self.picker.choose(scores[0])
        return sample_from(scores[0], self.generator)

    def probabilities(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        """The distribution `choose` samples from (1-D), for the logits inspector ("after samplers").
        The picker's state is not advanced; XTC, when on, flips its coin on the generator as in `choose`."""
        scores = self.process(input_ids, scores)[0].float()
        if self.greedy:
            probs = torch.zeros_like(scores)
            probs[scores.argmax()] = 1.0
            return probs
        if self.picker is not None:
            scores = self.picker.keep(scores)
        return torch.softmax(scores, dim=-1)


def build_sampler(
    params: SamplingParams,
    *,
    vocab_size: int,
    eos_token_ids: Iterable[int],
    prompt_ids: Sequence[int] = (),
    vocabulary: Vocabulary | None = None,
    extra_processors: Sequence[Any] = (),
) -> Sampler:
    """The Sampler for one generation: a fresh picker state, a generator seeded from params.seed (a random
    seed when it is -1; the one used is `Sampler.seed`, so a reply can be replayed).

    `vocabulary` is the model's (DRY's sequence breakers, XTC's newline; without it, neither has any);
    `prompt_ids` feed the encoder repetition penalty. Settings that cannot work with this vocabulary
    (a biased or banned id outside it, dynatemp_low above dynatemp_high) raise SamplingError."""
    seed = params.seed if params.seed >= 0 else random.randrange(2**63)
    generator = torch.Generator().manual_seed(seed)
    eos = {t for t in eos_token_ids if 0 <= t < vocab_size}
    processors: list[Processor] = []
    for field, ids in (("logit_bias", params.logit_bias), ("custom_token_bans", params.custom_token_bans)):
        outside = sorted(t for t in ids if t >= vocab_size)
        if outside:
            raise SamplingError(
                f"{field}: token ids outside the vocabulary (0..{vocab_size - 1}): {outside[:5]}"
            )
    bias = dict(params.logit_bias)
    bias.update({t: float("-inf") for t in params.custom_token_bans})
    if params.ban_eos_token:
        bias.update({t: float("-inf") for t in eos})
    if bias:
        processors.append(LogitBias(bias, vocab_size))
    picker: Mirostat | AdaptiveP | None = None
    for name in params.active_samplers():
        try:
            if name == "mirostat":
                picker = Mirostat(params.mirostat_mode, params.mirostat_tau, params.mirostat_eta, generator)
            elif name == "adaptive_p":
                picker = AdaptiveP(params.adaptive_target, params.adaptive_decay, generator)
            else:
                processors.append(_make(name, params, generator, prompt_ids, vocabulary, eos))
        except ValueError as exc:
            raise SamplingError(f"{name}: {exc}") from None
    if extra_processors:  # ours never write to their input; a foreign processor may: give it a copy
        processors.append(_CopyScores())
        processors.extend(extra_processors)
    return Sampler(processors, generator, seed, params.greedy, picker)


class _CopyScores:
    """Hands the processors after it a copy (they may write to their input)."""

    name = "copy"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.clone()


def _make(
    name: str,
    p: SamplingParams,
    generator: torch.Generator,
    prompt_ids: Sequence[int],
    vocabulary: Vocabulary | None,
    eos: set[int],
) -> Processor:
    if name == "dry":
        breakers = vocabulary.breakers(p.dry_sequence_breakers) if vocabulary is not None else {}
        return DRY(p.dry_multiplier, p.dry_base, p.dry_allowed_length, breakers, p.dry_penalty_last_n)
    if name == "xtc":
        newline = sequence_breaker_ids(["\n"], vocabulary.encode if vocabulary is not None else None)
        return XTC(p.xtc_threshold, p.xtc_probability, generator, protected=eos | newline)
    makers: dict[str, Callable[[], Processor]] = {
        "repetition_penalty": lambda: RepetitionPenalty(p.repetition_penalty, p.repetition_penalty_range),
        "presence_penalty": lambda: PresenceFrequencyPenalty(
            p.presence_penalty, 0.0, p.repetition_penalty_range
        ),
        "frequency_penalty": lambda: PresenceFrequencyPenalty(
            0.0, p.frequency_penalty, p.repetition_penalty_range
        ),
        "temperature": lambda: Temperature(p.temperature),
        "dynamic_temperature": lambda: DynamicTemperature(
            p.dynatemp_low, p.dynatemp_high, p.dynatemp_exponent
        ),
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
        "encoder_repetition_penalty": lambda: EncoderRepetitionPenalty(
            p.encoder_repetition_penalty, prompt_ids
        ),
        "no_repeat_ngram": lambda: NoRepeatNGram(p.no_repeat_ngram_size),
    }
    return makers[name]()
