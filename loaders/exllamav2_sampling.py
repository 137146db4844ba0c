"""Hearth's sampler settings mapped onto `ExLlamaV2Sampler.Settings`, or the reasons they cannot be.

ExLlamaV2's sampler runs a fixed order (exllamav2/generator/sampler.py and ext_sampling.cpp, 0.3.x):
penalties -> token bias -> DRY -> temperature -> top_k -> top_p -> top_a -> min_p -> tfs -> typical ->
mirostat (v2) -> post-softmax temperature (temperature_last, or dynamic temperature) -> XTC -> draw.
Hearth's order is data (`sampler_priority`), so the native path is taken only when the active samplers
already appear in an order ExLlamaV2 can reproduce; otherwise `unsupported` names what is in the way
and the generation core runs Hearth's own pipeline on ExLlamaV2's logits. Nothing is dropped silently.
DRY and Mirostat 2 run as ExLlamaV2 implements them (as llama.cpp's chain does for its path): same
settings, its own code. XTC is left to Hearth: exllamav2 0.3.2's xtc_cpu (exllamav2_ext/cpp/sampling.cpp)
tests `temp_probs[i + 1]` against the threshold and `i != min_prob` (an index against a probability), which
is XTC only when the candidates reach it sorted by descending probability; after min_p/top_a (which only
partition) or with no truncation they are in vocabulary order, and the last candidate reads one past the
list. Its result would depend on array order, so the native path reports "xtc" instead of running it.

This module never imports exllamav2: `settings_fields` returns plain attribute values, so the mapping
is tested on every machine and the model only copies them onto a `Settings` object.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webui.sampling import SamplingParams

#: Position of each Hearth sampler (registry.SAMPLERS) in ExLlamaV2's fixed pipeline; equal stages commute.
_STAGE: dict[str, float] = {
    "repetition_penalty": 0.0, "presence_penalty": 0.5, "frequency_penalty": 0.5, "dry": 1.0,
    "temperature": 2.0, "top_k": 3.0, "top_p": 3.1, "top_a": 3.2, "min_p": 3.3, "tfs": 3.4,
    "typical_p": 3.5, "mirostat": 4.0, "dynamic_temperature": 5.0,
}  # no "xtc": see the module docstring
_POST_TEMPERATURE = 5.0
#: exllamav2 asserts dry_range > dry_max_ngram (20) when a range is set.
_DRY_MAX_NGRAM = 20


def _ordered(stages: list[float]) -> bool:
    return all(a <= b for a, b in zip(stages, stages[1:], strict=False))


def temperature_last(params: SamplingParams) -> bool | None:
    """Where ExLlamaV2 must apply plain temperature for Hearth's order: False = before truncation,
    True = after it (post-softmax), None = neither reproduces the order."""
    active = [n for n in params.active_samplers() if n in _STAGE]  # greedy skips are already left out
    for last in (False, True):
        stages = [_POST_TEMPERATURE if (n == "temperature" and last) else _STAGE[n] for n in active]
        if _ordered(stages):
            return last
    return None


def unsupported(params: SamplingParams) -> list[str]:
    """Settings ExLlamaV2's sampler cannot honour exactly, in Hearth's names ([] = native is exact)."""
    active = params.active_samplers()
    missing = [name for name in active if name not in _STAGE]
    if "mirostat" in active and params.mirostat_mode != 2:
        missing.append("mirostat_mode")  # ExLlamaV2 implements Mirostat 2 only
    if 0 < params.temperature < 0.01 and not params.dynamic_temperature:
        missing.append("temperature")  # ExLlamaV2 turns temperature < 0.01 into greedy decoding
    if "dry" in active and 0 < params.dry_penalty_last_n <= _DRY_MAX_NGRAM:
        missing.append("dry_penalty_last_n")
    if "repetition_penalty" in active and any(math.isfinite(v) and v != 0 for v in params.logit_bias.values()):
        missing.append("logit_bias")  # Hearth biases before the penalty, ExLlamaV2 after: they differ
    if params.grammar_string:
        missing.append("grammar_string")  # ExLlamaV2's sampler has no grammar: Hearth's pipeline runs it
    if params.json_schema is not None:
        missing.append("json_schema")
    if not missing and temperature_last(params) is None:
        missing.append("sampler_priority")
    return list(dict.fromkeys(missing))


def _range(last_n: int) -> int:
    """Hearth uses 0 for 'the whole context'; ExLlamaV2 uses -1 (0 there penalises nothing:
    apply_rep_penalty_cpu in exllamav2_ext/cpp/sampling.cpp starts at seq_len - range)."""
    return -1 if last_n <= 0 else last_n


def settings_fields(params: SamplingParams, sequence_breakers: set[int]) -> dict[str, Any]:
    """Every `ExLlamaV2Sampler.Settings` attribute Hearth controls (caller checked `unsupported`).

    All are set explicitly because ExLlamaV2's defaults are not neutral (temperature 0.8, top_k 50,
    top_p 0.8, repetition penalty 1.025). Token bias is built by the model, which knows the logits width.
    Names and meanings are those of the `Settings` dataclass in exllamav2/generator/sampler.py (0.3.2): a
    plain dataclass, so a misspelt name would be set without error and ignored."""
    active = set(params.active_samplers())
    greedy = params.greedy
    fields: dict[str, Any] = {
        "token_repetition_penalty": params.repetition_penalty,
        "token_repetition_range": _range(params.repetition_penalty_range),
        "token_repetition_decay": 0,
        "token_frequency_penalty": params.frequency_penalty,
        "token_presence_penalty": params.presence_penalty,
        "dry_multiplier": params.dry_multiplier if "dry" in active else 0.0,
        "dry_base": params.dry_base,
        "dry_allowed_length": params.dry_allowed_length,
        "dry_range": max(params.dry_penalty_last_n, 0),  # 0 = unlimited in apply_dry
        "dry_sequence_breakers": set(sequence_breakers),  # token ids; None would mean exllamav2's own defaults
        "smoothing_factor": 0.0, "skew": 0.0,
        "temperature": 1.0, "temperature_last": False, "min_temp": 0.0, "max_temp": 0.0, "temp_exponent": 1.0,
        "top_k": 0, "top_p": 1.0, "top_a": 0.0, "min_p": 0.0, "tfs": 0.0, "typical": 0.0,
        # mirostat_mu None: sample() starts it at [0.0] per batch row, which mirostat_pre_cpu reads as 2 * tau
        "mirostat": False, "mirostat_tau": params.mirostat_tau, "mirostat_eta": params.mirostat_eta, "mirostat_mu": None,
        "xtc_probability": 0.0, "xtc_threshold": params.xtc_threshold,  # XTC never runs natively (`unsupported`)
        "cfg_scale": None, "token_bias": None,
    }
    if greedy:
        fields["top_k"] = 1  # after penalties and DRY, exactly as Hearth's argmax
        return fields
    if "temperature" in active:
        fields["temperature"] = params.temperature
        fields["temperature_last"] = bool(temperature_last(params))
    if "dynamic_temperature" in active:
        low, high = params.dynatemp_low, params.dynatemp_high
        if high > low:
            fields.update(min_temp=low, max_temp=high, temp_exponent=params.dynatemp_exponent)
        else:  # a zero-width range is a plain temperature at the dynamic-temperature position
            fields.update(temperature=max(low, 1e-4), temperature_last=True)
    truncation = {"top_k": "top_k", "top_p": "top_p", "top_a": "top_a", "min_p": "min_p", "tfs": "tfs", "typical_p": "typical"}
    for hearth_name, exl_name in truncation.items():
        if hearth_name in active:
            fields[exl_name] = getattr(params, hearth_name)
    if "mirostat" in active:
        fields["mirostat"] = True
    return fields
