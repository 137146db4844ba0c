"""The one Gradio widget builder for a declared setting (`webui.param_specs.ParamSpec`): the Model tab's
loader parameters, the Generation tab's samplers and the Session tab's extension settings all get their
widgets here, so a setting looks and behaves the same wherever it is shown; its description is the tooltip.
Each caller keeps its own layout (where a widget goes, its DOM id prefix, its label)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.param_specs import ParamSpec

#: Int/float ranges with at most this many steps become sliders; wider ones (n_ctx up to 1M) a number box.
MAX_SLIDER_STEPS = 2000
#: Kinds shown as a text box; a list or dict arrives already turned into text by the caller.
TEXT_KINDS = ("str", "list", "dict")


def use_slider(spec: ParamSpec, slider_max: float | None = None) -> bool:
    """Whether `spec` becomes a slider: a bounded number whose range (up to `slider_max`, a practical end
    below a far wider validated one) has few enough steps."""
    if not spec.numeric or spec.minimum is None or spec.maximum is None:
        return False
    span = (spec.maximum if slider_max is None else slider_max) - spec.minimum
    step = spec.step or (1 if spec.kind == "int" else span / 100)
    return span / step <= MAX_SLIDER_STEPS


def widget_for(
    spec: ParamSpec,
    value: Any = None,
    elem_prefix: str = "",
    locked: str | None = None,
    *,
    label: str | None = None,
    slider_max: float | None = None,
    lines: int = 1,
    max_lines: int | None = None,
) -> gr.components.Component:
    """One input for one setting, showing `value` (else the default); a `locked` setting (the reason) is
    disabled at its default. `lines` / `max_lines` shape a text box; `slider_max` ends a slider early (typed
    values may still go up to the declared maximum)."""
    value = spec.default if value is None or locked else value
    common: dict[str, Any] = {
        "label": label or spec.name,
        "info": f"{spec.help} Disabled: {locked}." if locked else spec.help or None,
        "value": value,
        "elem_id": f"{elem_prefix}{spec.name}" if elem_prefix else None,
        # explicit: inside gr.render Gradio cannot infer it from the (re-attached) event inputs
        "interactive": not locked,
    }
    if spec.kind == "bool":
        return gr.Checkbox(**common)
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices), **common)
    if spec.kind in TEXT_KINDS:
        text = {"max_lines": max_lines} if max_lines is not None else {}
        if spec.secret:
            text = {"type": "password"}
        return gr.Textbox(lines=lines, **text, **common)
    if not spec.numeric:
        raise ValueError(f"{spec.name}: no widget for a setting of kind {spec.kind}")
    step = spec.step or (1 if spec.kind == "int" else None)
    if use_slider(spec, slider_max):
        maximum = spec.maximum if slider_max is None else slider_max
        return gr.Slider(minimum=spec.minimum, maximum=maximum, step=step, **common)
    precision = 0 if spec.kind == "int" else None
    return gr.Number(minimum=spec.minimum, maximum=spec.maximum, step=step, precision=precision, **common)
