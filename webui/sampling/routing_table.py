"""Where settings run on the App's loaded model: the request at hand, and every setting on its own.

`routing.route` decides; this module only feeds it what the App knows (the core's extra logits
processors, the extensions that may add one) and, for the overview, one typical non-neutral value per
setting. The Parameters tab and `/v1/internal/samplers` both read from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webui.sampling.params import SamplingParams
from webui.sampling.registry import REQUEST_SETTINGS, SAMPLERS
from webui.sampling.routing import SamplerRouting, route

if TYPE_CHECKING:
    from webui.app import App
    from webui.loader_api import Model

#: A typical value that turns each setting on (and nothing else), from the registry. Keys: the sampler
#: names of `sampler_priority`, then the request-level settings, then logprobs (a request field).
EXAMPLES: dict[str, dict[str, Any]] = {
    **{spec.name: dict(spec.example) for spec in SAMPLERS},
    **{setting.name: dict(setting.example) for setting in REQUEST_SETTINGS},
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
