"""Where settings run on the App's loaded model: the request at hand, and every setting on its own.

`routing.route` decides; this module only feeds it what the App knows (the core's extra logits
processors, the extensions that may add one) and, for the overview, one typical non-neutral value per
setting. The Parameters tab and `/v1/internal/samplers` both read from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webui.sampling.params import SamplingParams
from webui.sampling.routing import SamplerRouting, route

if TYPE_CHECKING:
    from webui.app import App
    from webui.loader_api import Model

#: A typical value that turns each setting on (and nothing else). Keys: the sampler names of
#: `sampler_priority`, then the request-level settings, then logprobs (a request field, not a sampler).
EXAMPLES: dict[str, dict[str, Any]] = {
    "repetition_penalty": {"repetition_penalty": 1.1},
    "presence_penalty": {"presence_penalty": 0.5},
    "frequency_penalty": {"frequency_penalty": 0.5},
    "dry": {"dry_multiplier": 0.8},
    "temperature": {"temperature": 0.7},
    "dynamic_temperature": {"dynamic_temperature": True, "dynatemp_low": 0.5, "dynatemp_high": 1.5},
    "quadratic_sampling": {"smoothing_factor": 0.3},
    "top_n_sigma": {"top_n_sigma": 1.0},
    "top_k": {"top_k": 40},
    "top_p": {"top_p": 0.9},
    "typical_p": {"typical_p": 0.9},
    "epsilon_cutoff": {"epsilon_cutoff": 3.0},
    "eta_cutoff": {"eta_cutoff": 3.0},
    "tfs": {"tfs": 0.95},
    "top_a": {"top_a": 0.2},
    "min_p": {"min_p": 0.05},
    "adaptive_p": {"adaptive_target": 0.3},
    "mirostat": {"mirostat_mode": 2},
    "xtc": {"xtc_probability": 0.5},
    "encoder_repetition_penalty": {"encoder_repetition_penalty": 1.1},
    "no_repeat_ngram": {"no_repeat_ngram_size": 3},
    "logit_bias": {"logit_bias": {"0": 2.0}},
    "custom_token_bans": {"custom_token_bans": [0]},
    "ban_eos_token": {"ban_eos_token": True},
    "guidance_scale": {"guidance_scale": 1.5},
    "banned_strings": {"banned_strings": ["example"]},
    "grammar_string": {"grammar_string": 'root ::= "yes" | "no"'},
    "logprobs": {"logprobs": 5},
}


@dataclass(frozen=True)
class SettingRoute:
    """Where one setting, on alone with its example value, runs."""

    runs: str  # "native", "pipeline" or "unavailable"
    reason: str | None
    #: Runs in the pipeline on a backend that has a faster native sampler.
    slower: bool
    example: dict[str, Any]


def processor_extensions(app: App) -> list[str]:
    """Enabled extensions with a logits processor hook: a request they add a processor to runs in
    Hearth's pipeline (the hook decides per request, so this is a "may")."""
    manager = app.extensions
    if manager is None:
        return []
    return [name for name in manager.enabled if manager.has_hook(name, "logits_processor")]


def route_loaded(app: App, params: SamplingParams, *, logprobs: int = 0) -> SamplerRouting:
    """`route` on the loaded model (raises NoModelLoaded), counting the core's own extra processors."""
    return route(app.models.require(), params, logprobs=logprobs, processors=bool(app.core.extra_processors))


def each_setting(model: Model, *, processors: bool = False) -> dict[str, SettingRoute]:
    """Every setting in `EXAMPLES`, each on alone, in chain order."""
    table = {}
    for name, example in EXAMPLES.items():
        logprobs = int(example.get("logprobs", 0))
        params = SamplingParams.model_validate({k: v for k, v in example.items() if k != "logprobs"})
        table[name] = _one(name, route(model, params, logprobs=logprobs, processors=processors), example)
    return table


def _one(name: str, routing: SamplerRouting, example: dict[str, Any]) -> SettingRoute:
    if name in routing.unavailable:
        return SettingRoute("unavailable", routing.unavailable[name], False, example)
    if routing.path == "native":
        return SettingRoute("native", None, False, example)
    if routing.native_sampler is None:
        why = f"{routing.loader} has no native sampler: every setting runs in Hearth's pipeline"
    else:
        why = routing.forced_pipeline.get(name) or "; ".join(routing.forced_pipeline.values())
    return SettingRoute("pipeline", why, routing.slower, example)
