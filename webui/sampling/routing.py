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

if TYPE_CHECKING:
    from webui.loader_api import Model

#: Request-level settings beside the samplers, with what makes them active.
_REQUEST_SETTINGS = (
    "logit_bias",
    "custom_token_bans",
    "ban_eos_token",
    "guidance_scale",
    "banned_strings",
    "grammar_string",
)
_PIPELINE_ONLY = {
    "guidance_scale": "CFG evaluates a second sequence (the negative prompt) per token: Hearth's pipeline does it",
    "banned_strings": "banned strings roll back and re-sample, which needs Hearth's pipeline",
    "logprobs": "log-probabilities of each token come from Hearth's pipeline",
    "logits_processors": "an extension's logits processor runs in Hearth's pipeline",
}
GRAMMAR_NEEDS = "grammar runs only in llama.cpp's native chain (llama.cpp loader)"


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
    #: Settings this loader cannot run at all, with why (the request is refused while they are set).
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
    """Every setting that changes anything, in the order it runs."""
    neutral = SamplingParams()
    first = [n for n in _REQUEST_SETTINGS[:3] if getattr(params, n) != getattr(neutral, n)]
    last = [n for n in _REQUEST_SETTINGS[3:] if getattr(params, n) != getattr(neutral, n)]
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
        wants = {
            "guidance_scale": params.guidance_scale != 1,
            "banned_strings": bool(params.banned_strings),
            "logprobs": logprobs > 0,
            "logits_processors": processors,
        }
        forced.update({name: _PIPELINE_ONLY[name] for name, on in wants.items() if on})
        forced.pop("grammar_string", None)
    path = "native" if native_name is not None and not forced else "pipeline"
    unavailable: dict[str, str] = {}
    if params.grammar_string and not (path == "native" and model.supports_grammar()):
        blockers = ", ".join(forced) if forced and model.supports_grammar() else ""
        unavailable["grammar_string"] = GRAMMAR_NEEDS + (
            f"; {blockers} send this request to the pipeline" if blockers else ""
        )
    loader = getattr(getattr(model, "info", None), "loader", type(model).__name__)
    return SamplerRouting(loader, native_name, path, active, forced, unavailable)
