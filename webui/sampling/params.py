"""Sampler settings: one typed, validated model with text-generation-webui's field names.

Defaults are neutral (no effect), so a preset file only lists what it changes. Validation happens here,
once: a bad value is an error naming the field, never a silent clamp inside the sampling loop.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from webui.loader_api import HearthError


class SamplingError(HearthError):
    """A preset file or sampler setting is invalid."""


#: text-generation-webui's default order. Penalties first (they see raw logits), then temperature,
#: then truncation, then the samplers that pick or reshape the survivors.
DEFAULT_SAMPLER_PRIORITY: tuple[str, ...] = (
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "dry",
    "temperature",
    "dynamic_temperature",
    "quadratic_sampling",
    "top_n_sigma",
    "top_k",
    "top_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "tfs",
    "top_a",
    "min_p",
    "adaptive_p",
    "mirostat",
    "xtc",
    "encoder_repetition_penalty",
    "no_repeat_ngram",
)
_TEMPERATURE_FAMILY = ("temperature", "dynamic_temperature", "quadratic_sampling")
#: With greedy decoding (do_sample off or temperature 0) these cannot change the argmax, or are random:
#: they are skipped, as transformers skips its warpers when not sampling. Penalties still apply.
GREEDY_SKIPS = frozenset(
    {
        "temperature",
        "dynamic_temperature",
        "quadratic_sampling",
        "top_n_sigma",
        "top_k",
        "top_p",
        "typical_p",
        "epsilon_cutoff",
        "eta_cutoff",
        "tfs",
        "top_a",
        "min_p",
        "adaptive_p",
        "mirostat",
        "xtc",
    }
)
#: Samplers that pick the token themselves: they close the chain, and only one may be on.
PICKERS = ("mirostat", "adaptive_p")
TokenId = Annotated[int, Field(ge=0)]


class SamplingParams(BaseModel):
    """Every sampler setting of one request, validated at the edge (UI, API, preset file).

    Field names are text-generation-webui's, so SillyTavern and tgw presets work unchanged."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    temperature: float = Field(1.0, ge=0, le=100)
    dynamic_temperature: bool = False
    dynatemp_low: float = Field(1.0, ge=0, le=100)
    dynatemp_high: float = Field(1.0, ge=0, le=100)
    dynatemp_exponent: float = Field(1.0, gt=0, le=100)
    smoothing_factor: float = Field(0.0, ge=0, le=100)
    smoothing_curve: float = Field(1.0, ge=1, le=10)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, ge=0, le=1)
    min_p: float = Field(0.0, ge=0, le=1)
    top_a: float = Field(0.0, ge=0, le=1)
    typical_p: float = Field(1.0, ge=0, le=1)
    tfs: float = Field(1.0, ge=0, le=1)
    epsilon_cutoff: float = Field(0.0, ge=0, le=9, description="In units of 1e-4, as text-generation-webui.")
    eta_cutoff: float = Field(0.0, ge=0, le=20, description="In units of 1e-4, as text-generation-webui.")
    top_n_sigma: float = Field(0.0, ge=0, le=10)
    repetition_penalty: float = Field(1.0, ge=0.01, le=10)
    repetition_penalty_range: int = Field(0, ge=0, description="Last N tokens penalised; 0 = all.")
    encoder_repetition_penalty: float = Field(1.0, ge=0.01, le=10)
    presence_penalty: float = Field(0.0, ge=-5, le=5)
    frequency_penalty: float = Field(0.0, ge=-5, le=5)
    no_repeat_ngram_size: int = Field(0, ge=0, le=64)
    dry_multiplier: float = Field(0.0, ge=0, le=10)
    dry_base: float = Field(1.75, ge=1, le=10)
    dry_allowed_length: int = Field(2, ge=1, le=100)
    dry_penalty_last_n: int = Field(0, ge=0, description="Tokens DRY looks back over; 0 = all.")
    dry_sequence_breakers: list[str] = Field(default_factory=lambda: ["\n", ":", '"', "*"])
    xtc_threshold: float = Field(0.1, ge=0, le=0.5)
    xtc_probability: float = Field(0.0, ge=0, le=1)
    mirostat_mode: int = Field(0, ge=0, le=2)
    mirostat_tau: float = Field(5.0, ge=0, le=20)
    mirostat_eta: float = Field(0.1, ge=0, le=1)
    adaptive_target: float = Field(
        0.0, ge=-1, le=1,
        description="adaptive-p: pick tokens whose probability is near this target, steered over time "
        "(0 or negative = off; SillyTavern sends -0.01 for off, as llama.cpp).",
    )
    adaptive_decay: float = Field(
        0.9, ge=0, le=0.99,
        description="adaptive-p: how long its memory of picked probabilities is (about 1 / (1 - decay) tokens).",
    )
    logit_bias: dict[TokenId, Annotated[float, Field(ge=-100, le=100)]] = Field(
        default_factory=dict, description="Token id -> bias added to its logit (OpenAI's range, -100..100)."
    )
    custom_token_bans: list[TokenId] = Field(default_factory=list)
    ban_eos_token: bool = False
    do_sample: bool = True
    temperature_last: bool = False
    sampler_priority: list[str] = Field(default_factory=lambda: list(DEFAULT_SAMPLER_PRIORITY))
    seed: int = Field(-1, ge=-1, lt=2**63)
    # Handled by the generation core rather than a logits processor; set together with the samplers.
    guidance_scale: float = Field(1.0, ge=-5, le=10)
    negative_prompt: str = ""
    grammar_string: str = ""
    banned_strings: list[str] = Field(default_factory=list)

    @field_validator("dry_sequence_breakers", mode="before")
    @classmethod
    def _breakers(cls, value: Any) -> Any:
        """SillyTavern sends a JSON-encoded list as a string, text-generation-webui's UI the same list
        without brackets ('"\\n", ":"'); a plain comma list (without quotes) is accepted too."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list of strings: {exc}") from None
            if text.startswith('"'):
                try:
                    return json.loads(f"[{text}]")
                except json.JSONDecodeError:
                    pass
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("custom_token_bans", mode="before")
    @classmethod
    def _bans(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return [int(part) for part in value.replace(" ", "").split(",") if part]
            except ValueError:
                raise ValueError("expected token ids separated by commas") from None
        return value

    @field_validator("banned_strings", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return [line for line in value.splitlines() if line] if isinstance(value, str) else value

    @field_validator("sampler_priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        names = (
            [n.strip() for n in value.replace(",", "\n").splitlines()] if isinstance(value, str) else value
        )
        if not isinstance(names, list):
            return names
        names = [n for n in names if n]
        unknown = [n for n in names if n not in DEFAULT_SAMPLER_PRIORITY]
        if unknown:
            raise ValueError(
                f"unknown sampler {', '.join(map(repr, unknown))}; known: {', '.join(DEFAULT_SAMPLER_PRIORITY)}"
            )
        # Samplers missing from a user's list keep their default relative place at the end.
        return names + [n for n in DEFAULT_SAMPLER_PRIORITY if n not in names]

    @model_validator(mode="after")
    def _one_picker(self) -> SamplingParams:
        if self.mirostat_mode > 0 and self.adaptive_target > 0:
            raise ValueError(
                "mirostat_mode and adaptive_target both pick the token: turn one off (mirostat_mode 0 or adaptive_target 0)"
            )
        return self

    def non_neutral(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what a preset file stores)."""
        neutral = SamplingParams()
        return {name: value for name, value in self.model_dump().items() if value != getattr(neutral, name)}

    @property
    def greedy(self) -> bool:
        """Argmax decoding: do_sample off, or temperature 0 (unless dynamic temperature replaces it)."""
        return not self.do_sample or (self.temperature == 0 and not self.dynamic_temperature)

    def is_active(self, name: str) -> bool:
        """Whether the sampler `name` would change anything with these settings."""
        checks = {
            "repetition_penalty": self.repetition_penalty != 1,
            "presence_penalty": self.presence_penalty != 0,
            "frequency_penalty": self.frequency_penalty != 0,
            "dry": self.dry_multiplier > 0,
            "temperature": not self.dynamic_temperature and self.temperature not in (0, 1),
            "dynamic_temperature": self.dynamic_temperature,
            "quadratic_sampling": self.smoothing_factor > 0,
            "top_n_sigma": self.top_n_sigma > 0,
            "top_k": self.top_k > 0,
            "top_p": self.top_p < 1,
            "typical_p": self.typical_p < 1,
            "epsilon_cutoff": self.epsilon_cutoff > 0,
            "eta_cutoff": self.eta_cutoff > 0,
            "tfs": self.tfs < 1,
            "top_a": self.top_a > 0,
            "min_p": self.min_p > 0,
            "adaptive_p": self.adaptive_target > 0,
            "mirostat": self.mirostat_mode > 0,
            "xtc": self.xtc_probability > 0,
            "encoder_repetition_penalty": self.encoder_repetition_penalty != 1,
            "no_repeat_ngram": self.no_repeat_ngram_size > 0,
        }
        return checks[name]

    def active_samplers(self) -> list[str]:
        """The samplers that will run, in the order they run.

        Order: `sampler_priority`; temperature_last moves temperature, dynamic_temperature and
        quadratic_sampling to the end (as text-generation-webui), and mirostat or adaptive_p, which pick
        the token, always close the chain, after them. Greedy decoding skips GREEDY_SKIPS. logit_bias (biases, bans)
        is not listed: it always runs first."""
        order = [
            n for n in self.sampler_priority if self.is_active(n) and not (self.greedy and n in GREEDY_SKIPS)
        ]
        if self.temperature_last:
            order = [n for n in order if n not in _TEMPERATURE_FAMILY] + [
                n for n in order if n in _TEMPERATURE_FAMILY
            ]
        for picker in PICKERS:
            if picker in order:
                order = [n for n in order if n != picker] + [picker]
        return order
