"""Where each setting of a request runs on the loaded model: the backend's own sampler, Hearth's
pipeline, or nowhere (the loader cannot do it).

A request runs whole on one path. A backend with a native sampler (llama.cpp's chain, ExLlamaV2's)
takes it when it can honour every active setting exactly; one setting it cannot honour (or logprobs,
CFG, banned strings, an extension's logits processor) sends the whole request through Hearth's
pipeline, which is slower on such a backend. The Parameters tab and `/v1/internal/samplers` show this
so a user sees what a setting costs, never a setting silently dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from webui.sampling.params import SamplingParams
from webui.sampling.registry import REQUEST_SETTINGS

if TYPE_CHECKING:
    from webui.loader_api import Model

#: Request flags (not settings) that need Hearth's pipeline, with why.
_PIPELINE_ONLY = {
    "logprobs": "log-probabilities of each token come from Hearth's pipeline",
    "logits_processors": "an extension's logits processor runs in Hearth's pipeline",
}
#: Why a grammar or JSON schema leaves a native sampler that cannot run one.
CONSTRAINT_NEEDS = "grammar and JSON schema run in Hearth's pipeline (llguidance) on this backend"


@dataclass(frozen=True)
class SamplerRouting:
    """The answer for one model and one request's settings."""

    loader: str
    #: The backend's own sampler ("llama.cpp", "ExLlamaV2"), or None when the loader always samples in
    #: Hearth's pipeline (Transformers, the *_HF loaders).
    native_sampler: str | None
    path: str  # "native" or "pipeline"
    #: Active settings, in the order they run (logit bias and bans first).
    active: list[str] = field(default_factory=list)
    #: Settings that send this request to the pipeline, with why (empty on the native path).
    forced_pipeline: dict[str, str] = field(default_factory=dict)
    #: Settings this loader cannot run at all, with why (the request is refused while they are set). Every
    #: setting runs somewhere today (grammars too, since the pipeline has llguidance); kept for the API.
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def native(self) -> list[str]:
        return [n for n in self.active if n not in self.unavailable] if self.path == "native" else []

    @property
    def pipeline(self) -> list[str]:
        return [n for n in self.active if n not in self.unavailable] if self.path == "pipeline" else []

    @property
    def slower(self) -> bool:
        """The pipeline was forced on a backend that has a faster native sampler."""
        return self.path == "pipeline" and self.native_sampler is not None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "native": self.native, "pipeline": self.pipeline, "slower": self.slower}


def active_settings(params: SamplingParams) -> list[str]:
    """Every setting that changes anything, in the order it runs (the token bias, the samplers, then the
    settings the core carries out)."""
    on = [setting for setting in REQUEST_SETTINGS if setting.active(params)]
    first = [setting.name for setting in on if setting.first]
    last = [setting.name for setting in on if not setting.first]
    return [*first, *params.active_samplers(), *last]


def route(
    model: Model, params: SamplingParams, *, logprobs: int = 0, processors: bool = False
) -> SamplerRouting:
    """Where `params` run on `model` (`logprobs` and `processors`: the request asks for log-probabilities,
    an extension adds a logits processor)."""
    active = active_settings(params)
    native_name = getattr(model, "native_sampler", None)
    forced: dict[str, str] = {}
    if native_name is not None:
        forced.update(model.native_limits(params))
        forced.update({s.name: s.pipeline_only for s in REQUEST_SETTINGS if s.pipeline_only and s.active(params)})
        wants = {"logprobs": logprobs > 0, "logits_processors": processors}
        forced.update({name: _PIPELINE_ONLY[name] for name, on in wants.items() if on})
        if params.constrained and not model.supports_grammar():
            field = "json_schema" if params.json_schema is not None else "grammar_string"
            forced.setdefault(field, CONSTRAINT_NEEDS)
    path = "native" if native_name is not None and not forced else "pipeline"
    loader = getattr(getattr(model, "info", None), "loader", type(model).__name__)
    return SamplerRouting(loader, native_name, path, active, forced)
