"""Sampler settings: one typed, validated model with text-generation-webui's field names.

Defaults are neutral (no effect), so a preset file only lists what it changes. Validation happens here,
once: a bad value is an error naming the field, never a silent clamp inside the sampling loop. Each field
carries its range and a one-sentence description, which the UI's tooltips and the API's OpenAPI document
show; which sampler reads it (or that it is request-level) is declared in `registry`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from webui.errors import HearthError
from webui.sampling.constraints import check_json_schema
from webui.sampling.registry import DEFAULT_SAMPLER_PRIORITY, active_chain

_ONE_CONSTRAINT = "grammar_string and json_schema are both set: give only one (a schema is a grammar too)"


class SamplingError(HearthError):
    """A preset file or sampler setting is invalid."""


TokenId = Annotated[int, Field(ge=0)]


def _schema_text(value: Any) -> Any:
    """json_schema as JSON text (text-generation-webui's UI, form fields) -> the object; empty or {} = none."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    return None if value == {} else value


class SamplingParams(BaseModel):
    """Every sampler setting of one request, validated at the edge (UI, API, preset file).

    Field names are text-generation-webui's, so SillyTavern and tgw presets work unchanged."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    temperature: float = Field(
        1.0, ge=0, le=100,
        description="Divides the logits: below 1 sharpens the distribution, above 1 flattens it; 0 = greedy "
        "decoding (always the most likely token).",
    )
    dynamic_temperature: bool = Field(
        False, description="Replace temperature with one set by the distribution's entropy, from dynatemp_low "
        "(confident) to dynatemp_high (uncertain).",
    )
    dynatemp_low: float = Field(1.0, ge=0, le=100, description="Dynamic temperature for a confident (low-entropy) distribution.")
    dynatemp_high: float = Field(1.0, ge=0, le=100, description="Dynamic temperature for an uncertain (high-entropy) distribution.")
    dynatemp_exponent: float = Field(
        1.0, gt=0, le=100,
        description="Dynamic temperature's curve: the normalised entropy is raised to this power (above 1 stays "
        "near dynatemp_low longer).",
    )
    smoothing_factor: float = Field(
        0.0, ge=0, le=100,
        description="Quadratic sampling: small values flatten the top of the distribution, large ones sharpen it "
        "(0 = off).",
    )
    smoothing_curve: float = Field(
        1.0, ge=1, le=10, description="Quadratic sampling's curve: 1 = quadratic, above 1 adds a cubic term."
    )
    top_k: int = Field(0, ge=0, description="Keep only the k most likely tokens (0 = off).")
    top_p: float = Field(
        1.0, ge=0, le=1, description="Nucleus: keep the most likely tokens whose probabilities add up to p (1 = off)."
    )
    min_p: float = Field(
        0.0, ge=0, le=1,
        description="Remove tokens less likely than min_p times the most likely token's probability (0 = off).",
    )
    top_a: float = Field(
        0.0, ge=0, le=1,
        description="Remove tokens less likely than top_a times the square of the top probability (0 = off).",
    )
    typical_p: float = Field(
        1.0, ge=0, le=1,
        description="Locally typical sampling: keep this much probability mass of the tokens whose surprise is "
        "closest to the entropy (1 = off).",
    )
    tfs: float = Field(
        1.0, ge=0, le=1,
        description="Tail-free sampling: cut the tail where the sorted probabilities' curve flattens (1 = off).",
    )
    epsilon_cutoff: float = Field(
        0.0, ge=0, le=9,
        description="Remove tokens less likely than this, in units of 1e-4 as text-generation-webui (0 = off).",
    )
    eta_cutoff: float = Field(
        0.0, ge=0, le=20,
        description="Remove tokens below min(eta, sqrt(eta) * exp(-entropy)), eta in units of 1e-4 as "
        "text-generation-webui (0 = off).",
    )
    top_n_sigma: float = Field(
        0.0, ge=0, le=10,
        description="Keep the tokens whose logit is within n standard deviations of the highest (0 = off).",
    )
    repetition_penalty: float = Field(
        1.0, ge=0.01, le=10,
        description="Divide the logit of every token already in the text (multiply a negative one) by this "
        "(1 = off).",
    )
    repetition_penalty_range: int = Field(
        0, ge=0,
        description="Last N tokens the repetition, presence and frequency penalties look at (0 = all).",
    )
    encoder_repetition_penalty: float = Field(
        1.0, ge=0.01, le=10,
        description="Above 1 favours the tokens of the prompt, below 1 avoids them (1 = off).",
    )
    presence_penalty: float = Field(
        0.0, ge=-5, le=5,
        description="Subtracted once from the logit of every token already in the text, as OpenAI's (0 = off).",
    )
    frequency_penalty: float = Field(
        0.0, ge=-5, le=5,
        description="Subtracted from a token's logit once per time it is already in the text, as OpenAI's "
        "(0 = off).",
    )
    no_repeat_ngram_size: int = Field(
        0, ge=0, le=64, description="Ban any token that would repeat an n-gram of this size (0 = off)."
    )
    dry_multiplier: float = Field(
        0.0, ge=0, le=10,
        description="DRY: strength of the penalty on a token that would extend a verbatim repeat (0 = off).",
    )
    dry_base: float = Field(
        1.75, ge=1, le=10, description="DRY: how fast the penalty grows with each token the repeat runs longer."
    )
    dry_allowed_length: int = Field(
        2, ge=1, le=100, description="DRY: the longest repeat, in tokens, left unpenalised."
    )
    dry_penalty_last_n: int = Field(0, ge=0, description="Tokens DRY looks back over (0 = all).")
    dry_sequence_breakers: list[str] = Field(
        default_factory=lambda: ["\n", ":", '"', "*"],
        description="DRY: strings that end a repeat, so formatting meant to recur is not penalised.",
    )
    xtc_threshold: float = Field(
        0.1, ge=0, le=0.5, description="XTC: tokens at least this likely count as top choices."
    )
    xtc_probability: float = Field(
        0.0, ge=0, le=1,
        description="XTC: chance per token of removing every top choice but the least likely (0 = off).",
    )
    mirostat_mode: int = Field(
        0, ge=0, le=2,
        description="Mirostat version (1 or 2) picking tokens to keep the text's surprise near mirostat_tau "
        "(0 = off).",
    )
    mirostat_tau: float = Field(
        5.0, ge=0, le=20, description="Mirostat's target surprise in bits per token: lower is more focused."
    )
    mirostat_eta: float = Field(
        0.1, ge=0, le=1, description="Mirostat's learning rate: how fast it corrects towards mirostat_tau."
    )
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
    custom_token_bans: list[TokenId] = Field(default_factory=list, description="Token ids never generated.")
    ban_eos_token: bool = Field(
        False, description="Never pick the end-of-sequence token: the reply ends at the token limit or a stop string."
    )
    do_sample: bool = Field(
        True, description="Off = greedy decoding: the most likely token after penalties and bans, other samplers skipped."
    )
    temperature_last: bool = Field(
        False,
        description="Run temperature, dynamic temperature and quadratic sampling after the other samplers, "
        "whatever sampler_priority says.",
    )
    sampler_priority: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SAMPLER_PRIORITY),
        description="The order the samplers run in, by name; samplers left out keep their default order at the end.",
    )
    seed: int = Field(
        -1, ge=-1, lt=2**63, description="Seed of the random draw (-1 = a new random seed per request, reported)."
    )
    # Handled by the generation core rather than a logits processor; set together with the samplers.
    guidance_scale: float = Field(
        1.0, ge=-5, le=10,
        description="Classifier-free guidance: above 1 pushes the reply away from negative_prompt (1 = off).",
    )
    negative_prompt: str = Field(
        "", description="CFG's negative prompt, what guidance_scale steers away from (empty = BOS alone)."
    )
    grammar_string: str = Field(
        "", description="A GBNF grammar the reply must follow (empty = none)."
    )
    json_schema: Annotated[
        dict[str, Any] | None,
        BeforeValidator(_schema_text),
        WithJsonSchema({"anyOf": [{"type": "object"}, {"type": "string"}, {"type": "null"}]}),
    ] = Field(
        None,
        description='A JSON schema the reply must follow, as an object or JSON text: the reply is one JSON value '
        'of it ({"type": "object"} = any JSON object; empty or {} = none).',
    )
    banned_strings: list[str] = Field(
        default_factory=list, description="Strings never generated: a reply that would hold one is re-sampled."
    )

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

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if value is None:
            return None
        if info.data.get("grammar_string"):
            raise ValueError(_ONE_CONSTRAINT)
        check_json_schema(value)
        return value

    @model_validator(mode="after")
    def _one_picker(self) -> SamplingParams:
        if self.mirostat_mode > 0 and self.adaptive_target > 0:
            raise ValueError(
                "mirostat_mode and adaptive_target both pick the token: turn one off (mirostat_mode 0 or adaptive_target 0)"
            )
        if self.grammar_string and self.json_schema is not None:  # set one after the other (assignment)
            raise ValueError(_ONE_CONSTRAINT)
        return self

    @property
    def constrained(self) -> bool:
        """A grammar or a JSON schema shapes the reply (`constraints`)."""
        return bool(self.grammar_string) or self.json_schema is not None

    def non_neutral(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what a preset file stores)."""
        neutral = SamplingParams()
        return {name: value for name, value in self.model_dump().items() if value != getattr(neutral, name)}

    @property
    def greedy(self) -> bool:
        """Argmax decoding: do_sample off, or temperature 0 (unless dynamic temperature replaces it)."""
        return not self.do_sample or (self.temperature == 0 and not self.dynamic_temperature)

    def active_samplers(self) -> list[str]:
        """The samplers that will run, in the order they run (`registry.active_chain`). logit_bias
        (biases, bans) is not listed: it always runs first."""
        return [spec.name for spec in active_chain(self)]
