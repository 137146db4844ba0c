"""The sampler registry: every sampler of `sampler_priority`, in its default order, declared once.

As llama.cpp's `common_sampler_init` walks one ordered list and switches on each name, everything about
a sampler is one `SamplerSpec` here: its `sampler_priority` name, the `SamplingParams` fields it reads,
when it is on, whether greedy decoding skips it, and how it is built. The default order, the validation
of `sampler_priority`, `SamplingParams.active_samplers()`, the pipeline (`build_sampler`) and the routing
table all derive from `SAMPLERS`; `REQUEST_SETTINGS` and `CHAIN_FIELDS` declare the other fields, so
every field of `SamplingParams` is accounted for (tests/test_sampler_registry.py checks it).

Adding a sampler: write its class (a logits processor: `__call__(input_ids, scores) -> scores`, never
writing to `scores`), add its settings fields to `SamplingParams` (neutral default, range, description),
and add one `SamplerSpec` here at its default place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import torch

from webui.sampling.adaptive_p import AdaptiveP
from webui.sampling.dry import DRY
from webui.sampling.mirostat import Mirostat
from webui.sampling.penalties import (
    EncoderRepetitionPenalty,
    NoRepeatNGram,
    PresenceFrequencyPenalty,
    RepetitionPenalty,
)
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
from webui.sampling.vocabulary import Vocabulary, sequence_breaker_ids
from webui.sampling.xtc import XTC

if TYPE_CHECKING:
    from webui.sampling.params import SamplingParams

Processor = Callable[[torch.LongTensor, torch.FloatTensor], torch.FloatTensor]


class Picker(Protocol):
    """A sampler that picks the token itself (mirostat, adaptive-p): it closes the chain."""

    name: str

    def keep(self, scores: torch.Tensor) -> torch.Tensor:
        """1-D logits -> the 1-D logits it would draw from (the logits inspector shows them)."""
        ...

    def choose(self, scores: torch.Tensor) -> int:
        """Draw one token from 1-D logits and update its state."""
        ...


@dataclass(frozen=True)
class BuildContext:
    """What a sampler may need besides its settings, for one generation."""

    generator: torch.Generator
    prompt_ids: Sequence[int] = ()
    #: The model's vocabulary (DRY's sequence breakers, XTC's newline); without it, neither has any.
    vocabulary: Vocabulary | None = None
    eos: frozenset[int] = frozenset()


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: `name` is its `sampler_priority` name, `reads` every field `active` and `build` read."""

    name: str
    reads: tuple[str, ...]
    active: Callable[[SamplingParams], bool]
    #: Raises ValueError for settings that cannot work (the pipeline reports it as a SamplingError).
    build: Callable[[SamplingParams, BuildContext], Processor | Picker]
    #: Settings that turn on this sampler alone, with a typical value (routing table, tests).
    example: Mapping[str, Any]
    #: Greedy decoding skips it (it cannot change the argmax, or is random), as transformers skips warpers.
    greedy_skip: bool = True
    #: It picks the token: it closes the chain, and only one picker may be on.
    picker: bool = False
    #: temperature_last moves it after the others (the temperature family, as text-generation-webui).
    temperature_family: bool = False


def _dry(p: SamplingParams, c: BuildContext) -> DRY:
    breakers = c.vocabulary.breakers(p.dry_sequence_breakers) if c.vocabulary is not None else {}
    return DRY(p.dry_multiplier, p.dry_base, p.dry_allowed_length, breakers, p.dry_penalty_last_n)


def _xtc(p: SamplingParams, c: BuildContext) -> XTC:
    newline = sequence_breaker_ids(["\n"], c.vocabulary.encode if c.vocabulary is not None else None)
    return XTC(p.xtc_threshold, p.xtc_probability, c.generator, protected=c.eos | newline)


#: Every sampler, in text-generation-webui's default order: penalties first (they see raw logits), then
#: temperature, then truncation, then the samplers that pick or reshape the survivors.
SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec(
        "repetition_penalty", ("repetition_penalty", "repetition_penalty_range"),
        active=lambda p: p.repetition_penalty != 1,
        build=lambda p, c: RepetitionPenalty(p.repetition_penalty, p.repetition_penalty_range),
        example={"repetition_penalty": 1.1}, greedy_skip=False,
    ),
    SamplerSpec(
        "presence_penalty", ("presence_penalty", "repetition_penalty_range"),
        active=lambda p: p.presence_penalty != 0,
        build=lambda p, c: PresenceFrequencyPenalty(p.presence_penalty, 0.0, p.repetition_penalty_range),
        example={"presence_penalty": 0.5}, greedy_skip=False,
    ),
    SamplerSpec(
        "frequency_penalty", ("frequency_penalty", "repetition_penalty_range"),
        active=lambda p: p.frequency_penalty != 0,
        build=lambda p, c: PresenceFrequencyPenalty(0.0, p.frequency_penalty, p.repetition_penalty_range),
        example={"frequency_penalty": 0.5}, greedy_skip=False,
    ),
    SamplerSpec(
        "dry", ("dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers"),
        active=lambda p: p.dry_multiplier > 0, build=_dry, example={"dry_multiplier": 0.8}, greedy_skip=False,
    ),
    SamplerSpec(
        "temperature", ("temperature", "dynamic_temperature"),
        active=lambda p: not p.dynamic_temperature and p.temperature not in (0, 1),
        build=lambda p, c: Temperature(p.temperature),
        example={"temperature": 0.7}, temperature_family=True,
    ),
    SamplerSpec(
        "dynamic_temperature", ("dynamic_temperature", "dynatemp_low", "dynatemp_high", "dynatemp_exponent"),
        active=lambda p: p.dynamic_temperature,
        build=lambda p, c: DynamicTemperature(p.dynatemp_low, p.dynatemp_high, p.dynatemp_exponent),
        example={"dynamic_temperature": True, "dynatemp_low": 0.5, "dynatemp_high": 1.5},
        temperature_family=True,
    ),
    SamplerSpec(
        "quadratic_sampling", ("smoothing_factor", "smoothing_curve"),
        active=lambda p: p.smoothing_factor > 0,
        build=lambda p, c: QuadraticSmoothing(p.smoothing_factor, p.smoothing_curve),
        example={"smoothing_factor": 0.3}, temperature_family=True,
    ),
    SamplerSpec(
        "top_n_sigma", ("top_n_sigma",), active=lambda p: p.top_n_sigma > 0,
        build=lambda p, c: TopNSigma(p.top_n_sigma), example={"top_n_sigma": 1.0},
    ),
    SamplerSpec(
        "top_k", ("top_k",), active=lambda p: p.top_k > 0,
        build=lambda p, c: TopK(p.top_k), example={"top_k": 40},
    ),
    SamplerSpec(
        "top_p", ("top_p",), active=lambda p: p.top_p < 1,
        build=lambda p, c: TopP(p.top_p), example={"top_p": 0.9},
    ),
    SamplerSpec(
        "typical_p", ("typical_p",), active=lambda p: p.typical_p < 1,
        build=lambda p, c: TypicalP(p.typical_p), example={"typical_p": 0.9},
    ),
    SamplerSpec(
        "epsilon_cutoff", ("epsilon_cutoff",), active=lambda p: p.epsilon_cutoff > 0,
        build=lambda p, c: EpsilonCutoff(p.epsilon_cutoff), example={"epsilon_cutoff": 3.0},
    ),
    SamplerSpec(
        "eta_cutoff", ("eta_cutoff",), active=lambda p: p.eta_cutoff > 0,
        build=lambda p, c: EtaCutoff(p.eta_cutoff), example={"eta_cutoff": 3.0},
    ),
    SamplerSpec(
        "tfs", ("tfs",), active=lambda p: p.tfs < 1,
        build=lambda p, c: TailFree(p.tfs), example={"tfs": 0.95},
    ),
    SamplerSpec(
        "top_a", ("top_a",), active=lambda p: p.top_a > 0,
        build=lambda p, c: TopA(p.top_a), example={"top_a": 0.2},
    ),
    SamplerSpec(
        "min_p", ("min_p",), active=lambda p: p.min_p > 0,
        build=lambda p, c: MinP(p.min_p), example={"min_p": 0.05},
    ),
    SamplerSpec(
        "adaptive_p", ("adaptive_target", "adaptive_decay"),
        active=lambda p: p.adaptive_target > 0,
        build=lambda p, c: AdaptiveP(p.adaptive_target, p.adaptive_decay, c.generator),
        example={"adaptive_target": 0.3}, picker=True,
    ),
    SamplerSpec(
        "mirostat", ("mirostat_mode", "mirostat_tau", "mirostat_eta"),
        active=lambda p: p.mirostat_mode > 0,
        build=lambda p, c: Mirostat(p.mirostat_mode, p.mirostat_tau, p.mirostat_eta, c.generator),
        example={"mirostat_mode": 2}, picker=True,
    ),
    SamplerSpec(
        "xtc", ("xtc_threshold", "xtc_probability"),
        active=lambda p: p.xtc_probability > 0, build=_xtc, example={"xtc_probability": 0.5},
    ),
    SamplerSpec(
        "encoder_repetition_penalty", ("encoder_repetition_penalty",),
        active=lambda p: p.encoder_repetition_penalty != 1,
        build=lambda p, c: EncoderRepetitionPenalty(p.encoder_repetition_penalty, c.prompt_ids),
        example={"encoder_repetition_penalty": 1.1}, greedy_skip=False,
    ),
    SamplerSpec(
        "no_repeat_ngram", ("no_repeat_ngram_size",), active=lambda p: p.no_repeat_ngram_size > 0,
        build=lambda p, c: NoRepeatNGram(p.no_repeat_ngram_size),
        example={"no_repeat_ngram_size": 3}, greedy_skip=False,
    ),
)  # fmt: skip
SAMPLER_BY_NAME: Mapping[str, SamplerSpec] = MappingProxyType({spec.name: spec for spec in SAMPLERS})
DEFAULT_SAMPLER_PRIORITY: tuple[str, ...] = tuple(SAMPLER_BY_NAME)
PICKERS: tuple[str, ...] = tuple(spec.name for spec in SAMPLERS if spec.picker)


@dataclass(frozen=True)
class RequestSetting:
    """A request-level setting that is not a sampler of `sampler_priority`: the token bias (run before
    every sampler, whatever the order) or one the generation core carries out (CFG, banned strings,
    grammar). Its name is the field that turns it on."""

    name: str
    reads: tuple[str, ...]
    active: Callable[[SamplingParams], bool]
    example: Mapping[str, Any]
    #: Runs before the samplers (the token bias); else around them, in the core.
    first: bool = False
    #: Why it needs Hearth's pipeline even on a backend with a native sampler (None: it does not).
    pipeline_only: str | None = None


REQUEST_SETTINGS: tuple[RequestSetting, ...] = (
    RequestSetting("logit_bias", ("logit_bias",), lambda p: bool(p.logit_bias), {"logit_bias": {"0": 2.0}},
                   first=True),
    RequestSetting("custom_token_bans", ("custom_token_bans",), lambda p: bool(p.custom_token_bans),
                   {"custom_token_bans": [0]}, first=True),
    RequestSetting("ban_eos_token", ("ban_eos_token",), lambda p: p.ban_eos_token, {"ban_eos_token": True},
                   first=True),
    RequestSetting(
        "guidance_scale", ("guidance_scale", "negative_prompt"), lambda p: p.guidance_scale != 1,
        {"guidance_scale": 1.5},
        pipeline_only="CFG evaluates a second sequence (the negative prompt) per token: Hearth's pipeline does it",
    ),
    RequestSetting(
        "banned_strings", ("banned_strings",), lambda p: bool(p.banned_strings), {"banned_strings": ["example"]},
        pipeline_only="banned strings roll back and re-sample, which needs Hearth's pipeline",
    ),
    RequestSetting("grammar_string", ("grammar_string",), lambda p: bool(p.grammar_string),
                   {"grammar_string": 'root ::= "yes" | "no"'}),
    RequestSetting("json_schema", ("json_schema",), lambda p: p.json_schema is not None,
                   {"json_schema": {"type": "object"}}),
)  # fmt: skip
#: Request-level fields that shape the chain as a whole rather than being a sampler: greedy or not
#: (with temperature 0), the order, and the seed of the draw.
CHAIN_FIELDS: frozenset[str] = frozenset({"do_sample", "temperature_last", "sampler_priority", "seed"})


def active_chain(params: SamplingParams) -> list[SamplerSpec]:
    """The samplers that will run, in the order they run.

    Order: `sampler_priority`; temperature_last moves the temperature family to the end (as
    text-generation-webui), and a picker (mirostat, adaptive_p) always closes the chain, after them.
    Greedy decoding skips the samplers marked `greedy_skip`."""
    greedy = params.greedy
    specs = [SAMPLER_BY_NAME[name] for name in params.sampler_priority]
    on = [s for s in specs if s.active(params) and not (greedy and s.greedy_skip)]
    if params.temperature_last:
        on = [s for s in on if not s.temperature_family] + [s for s in on if s.temperature_family]
    return [s for s in on if not s.picker] + [s for s in on if s.picker]
