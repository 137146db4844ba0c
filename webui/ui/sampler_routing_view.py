"""The "where these settings run" panel of the Generation sub-tab: `routing.route` for ``ctx.params`` on the
loaded model, rendered as a few lines of Markdown.

No event tells a tab that a model was loaded (the Model tab or the API may do it), so the panel is
recomputed when ``ctx.params`` changes, on page load, and whenever a tab around it is selected (coming
back to Parameters after loading a model shows the new loader).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import gradio as gr
from pydantic import ValidationError

from webui.sampling import SamplingParams
from webui.sampling.routing_table import processor_extensions, route_loaded
from webui.ui.context import UIContext, enclosing_tabs

if TYPE_CHECKING:
    from webui.app import App
    from webui.sampling.routing import SamplerRouting

_MARKDOWN = re.compile(r"([\\`*_\[\]<>#|])")


def _text(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", text)


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def routing_markdown(app: App, params: dict[str, Any] | None) -> str:
    """The panel's text for the session's settings (a short line while no model is loaded)."""
    if app.models.model is None:
        return "**Where these settings run:** no model loaded."
    try:
        sampling = SamplingParams.model_validate((params or {}).get("sampling") or {})
    except ValidationError as exc:
        return (
            f"**Where these settings run:** the settings are invalid ({_text(str(exc.errors()[0]['msg']))})."
        )
    lines = _describe(route_loaded(app, sampling))
    extensions = processor_extensions(app)
    if extensions:
        lines.append(
            f"- Extension(s) {_names(extensions)} may add a logits processor to a request; "
            "such a request runs in Hearth's pipeline."
        )
    return "\n".join(lines)


def _describe(r: SamplerRouting) -> list[str]:
    if r.path == "native":
        where = f"runs in {r.native_sampler}'s native chain"
    elif r.slower:
        where = f"runs in Hearth's pipeline, **slower** than {r.native_sampler}'s native chain"
    else:
        where = "runs in Hearth's pipeline (this loader has no native sampler)"
    lines = [f"**Where these settings run** ({_text(r.loader)}): {where}."]
    if r.native:
        lines.append(f"- Native ({_text(r.native_sampler or '')}): {_names(r.native)}")
    if r.pipeline:
        lines.append(f"- Hearth's pipeline: {_names(r.pipeline)}")
    if not r.native and not r.pipeline and not r.unavailable:
        lines.append("- No sampler setting is active: tokens are drawn from the model's own probabilities.")
    if r.slower:
        lines += [
            f"- Sent to the pipeline by `{name}`: {_text(why)}" for name, why in r.forced_pipeline.items()
        ]
    lines += [
        f"- ⚠️ Not available with {_text(r.loader)}: `{name}`: {_text(why)}. Generation is refused while it is set."
        for name, why in r.unavailable.items()
    ]
    return lines


def build_routing_panel(ctx: UIContext) -> gr.Markdown:
    """The panel; call inside the Generation sub-tab."""

    def render(params: dict[str, Any] | None) -> str:
        return routing_markdown(ctx.app, params)

    panel = gr.Markdown(render, inputs=[ctx.params], elem_id="sampler-routing")
    for tab in enclosing_tabs(panel):
        tab.select(render, [ctx.params], panel, show_progress="hidden")
    return panel
