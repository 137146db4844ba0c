"""The Generation sub-tab: presets, every sampler setting, and the request-level generation settings.

Widgets are generated from `SamplingParams`' pydantic fields (type, ge/le bounds and description, read as
a `ParamSpec` and built by the shared `widget_for`), so a sampler added to the model appears here without
retyping; `GROUPS` only decides where it is shown ("Other" catches the rest). An edit rebuilds
``ctx.params`` and validates it when the value is committed (a text or number box loses focus or gets
Enter, a slider is released, a box is ticked), so typing never floods toasts; an error is one toast naming
the field. Handlers take the widgets' raw values (``preprocess=False``) so a range error is ours, naming
the field, not Gradio's. Presets come from the shipped folder and ``user_data/presets`` (`PresetLibrary`);
the list is re-read on page load. Under the presets, a panel says where the current settings run on the
loaded model (`sampler_routing_view`).
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from webui.errors import HearthError
from webui.param_specs import spec_from_field
from webui.sampling import SamplingParams
from webui.sampling.presets import PresetLibrary
from webui.ui.confirm import ConfirmButton
from webui.ui.context import GENERATION_DEFAULTS, UIContext
from webui.ui.param_widgets import widget_for
from webui.ui.sampler_routing_view import build_routing_panel

GROUPS: dict[str, tuple[str, ...]] = {
    "Temperature": (
        "temperature",
        "temperature_last",
        "dynamic_temperature",
        "dynatemp_low",
        "dynatemp_high",
        "dynatemp_exponent",
        "smoothing_factor",
        "smoothing_curve",
    ),
    "Truncation": (
        "top_k",
        "top_p",
        "min_p",
        "top_a",
        "typical_p",
        "tfs",
        "epsilon_cutoff",
        "eta_cutoff",
        "top_n_sigma",
    ),
    "Penalties": (
        "repetition_penalty",
        "repetition_penalty_range",
        "presence_penalty",
        "frequency_penalty",
        "encoder_repetition_penalty",
        "no_repeat_ngram_size",
    ),
    "DRY": (
        "dry_multiplier",
        "dry_base",
        "dry_allowed_length",
        "dry_penalty_last_n",
        "dry_sequence_breakers",
    ),
    "XTC": ("xtc_threshold", "xtc_probability"),
    "Mirostat": ("mirostat_mode", "mirostat_tau", "mirostat_eta"),
    "Adaptive-p": ("adaptive_target", "adaptive_decay"),
    "Guidance (CFG)": ("guidance_scale", "negative_prompt"),
    "Grammar and bans": (
        "grammar_string",
        "json_schema",
        "banned_strings",
        "custom_token_bans",
        "logit_bias",
        "ban_eos_token",
    ),
    "Sampler order and seed": ("sampler_priority", "do_sample", "seed"),
}
#: Practical slider ends where the validated range is far wider than anyone uses (typing still allows more).
SLIDER_MAX = {
    "temperature": 5.0,
    "dynatemp_low": 5.0,
    "dynatemp_high": 5.0,
    "dynatemp_exponent": 5.0,
    "smoothing_factor": 10.0,
}
#: Fields shown one entry per line; other string lists use tgw's quoted, comma-separated form ("\n", "###").
LINE_LISTS = {"sampler_priority"}
GENERATION_FIELDS = tuple(GENERATION_DEFAULTS)
#: The least value of the whole-number generation settings.
GENERATION_MINIMUM = {"max_new_tokens": 1, "truncation_length": 0}


def field_error(label: str, message: str) -> gr.Error:
    """A user's mistake in one field: one toast naming it, no traceback in the console."""
    return gr.Error(f"{label}: {message}", print_exception=False)


def to_widget_value(name: str, value: Any) -> Any:
    """A setting as its widget shows it (lists and maps become text)."""
    if isinstance(value, dict):
        return json.dumps(value) if value else ""
    if isinstance(value, list):
        if name in LINE_LISTS:
            return "\n".join(map(str, value))
        if all(isinstance(v, int) for v in value):
            return ", ".join(map(str, value))
        return ", ".join(json.dumps(v, ensure_ascii=False) for v in value)
    return value


def from_widget_value(name: str, info: FieldInfo | None, value: Any, label: str | None = None) -> Any:
    """A widget's value back as the setting; text forms of lists and maps are parsed here (an error names
    the field by `label`, else by `name`)."""
    annotation = str(info.annotation) if info else ""
    if not isinstance(value, str) or annotation in ("<class 'str'>", "str"):
        return value
    text = value.strip()
    try:
        if annotation.startswith("dict"):
            return json.loads(text) if text else {}
        if annotation == "list[str]" and name not in LINE_LISTS:
            return json.loads(f"[{text}]") if text else []
    except json.JSONDecodeError as exc:
        expected = "a JSON object" if annotation.startswith("dict") else "quoted strings separated by commas"
        raise field_error(label or name, f"{exc.msg} (expected {expected})") from None
    return value


def field_widget(name: str, info: FieldInfo, value: Any) -> gr.components.Component:
    """One widget for one setting, from its field read as a spec (type, bounds, description)."""
    lines = 4 if name in LINE_LISTS or name in ("grammar_string", "json_schema", "negative_prompt") else 1
    return widget_for(
        spec_from_field(name, info),
        to_widget_value(name, value),
        "param-",
        slider_max=SLIDER_MAX.get(name),
        lines=lines,
        max_lines=20 if lines > 1 else 1,
    )


def generation_widgets(values: dict[str, Any]) -> dict[str, gr.components.Component]:
    """The request-level settings that are not samplers."""
    return {
        "max_new_tokens": gr.Slider(
            1,
            8192,
            value=values["max_new_tokens"],
            step=1,
            label="max_new_tokens",
            elem_id="param-max_new_tokens",
        ),
        "truncation_length": gr.Number(
            value=values["truncation_length"],
            minimum=0,
            precision=0,
            label="truncation_length",
            info="Prompt + reply budget; 0 = the model's context.",
            elem_id="param-truncation_length",
        ),
        "add_bos_token": gr.Checkbox(
            value=values["add_bos_token"], label="add_bos_token", elem_id="param-add_bos_token"
        ),
        "skip_special_tokens": gr.Checkbox(
            value=values["skip_special_tokens"],
            label="skip_special_tokens",
            elem_id="param-skip_special_tokens",
        ),
        "stop": gr.Textbox(
            value=to_widget_value("stop", values["stop"]),
            label="Stopping strings",
            info='Quoted, separated by commas: "\\nUser:", "###"',
            elem_id="param-stop",
        ),
    }


class GenerationControls:
    """The widgets by setting name, and the conversions between them and ``ctx.params``."""

    def __init__(self, widgets: dict[str, gr.components.Component]):
        self.widgets = widgets
        self.names = list(widgets)

    @property
    def inputs(self) -> list[gr.components.Component]:
        return list(self.widgets.values())

    def label(self, name: str) -> str:
        return str(getattr(self.widgets.get(name), "label", None) or name)

    def params(self, *values: Any) -> dict[str, Any]:
        """Widget values (raw or preprocessed) -> the validated ``ctx.params`` dict; a bad field raises one
        gr.Error naming it."""
        fields = SamplingParams.model_fields
        raw = dict(zip(self.names, values, strict=True))
        generation = {n: raw.pop(n) for n in GENERATION_FIELDS}
        sampling = {n: from_widget_value(n, fields.get(n), v, self.label(n)) for n, v in raw.items()}
        stop_info = FieldInfo(annotation=list[str])
        generation["stop"] = from_widget_value("stop", stop_info, generation["stop"], self.label("stop"))
        for key, low in GENERATION_MINIMUM.items():
            generation[key] = self._whole(key, generation[key], low)
        try:
            validated = SamplingParams.model_validate(sampling)
        except ValidationError as exc:
            problems = [
                f"{self.label(str(e['loc'][0])) if e['loc'] else 'sampling'}: {e['msg']}"
                for e in exc.errors()
            ]
            raise gr.Error("; ".join(problems), print_exception=False) from None
        return {"sampling": validated.model_dump(), **generation}

    def _whole(self, name: str, value: Any, low: int) -> int:
        if isinstance(value, str):
            value = value.strip() or None
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not number.is_integer() or number < low:
            raise field_error(self.label(name), f"a whole number of at least {low} is needed")
        return int(number)

    def params_if_valid(self, *values: Any) -> Any:
        """`params` for values still being edited (a slider dragged, its box typed in): no toast, and
        ``ctx.params`` is left alone while something is invalid (the commit says what)."""
        try:
            return self.params(*values)
        except gr.Error:
            return gr.skip()

    def fill(self, sampling: SamplingParams) -> list[Any]:
        """Updates for every widget: the samplers from `sampling`, generation settings unchanged."""
        values = sampling.model_dump()
        return [
            gr.update(value=to_widget_value(n, values[n])) if n in values else gr.update() for n in self.names
        ]

    def wire(self, params: gr.State) -> None:
        """Validate into `params` when a value is committed; sliders also follow quietly while moved."""
        commits, moving = [], []
        for widget in self.inputs:
            if isinstance(widget, gr.Slider):
                commits.append(widget.release)
                moving.append(widget.input)
            elif isinstance(widget, gr.Number | gr.Textbox):
                commits += [widget.blur, widget.submit]
            else:
                commits.append(widget.input)
        options: dict[str, Any] = {"show_progress": "hidden", "preprocess": False}
        gr.on(commits, self.params, self.inputs, params, **options)
        gr.on(moving, self.params_if_valid, self.inputs, params, trigger_mode="always_last", **options)


class PresetPanel:
    """The preset row: choose (fills the widgets), save as (a user preset), delete (asks first)."""

    def __init__(self, library: PresetLibrary):
        self.library = library

    def choices(self, value: str | None = None) -> Any:
        names = self.library.names()
        return gr.update(choices=names, value=value if value in names else None)

    def on_load(self) -> Any:
        """The list as it is now (presets saved or deleted since the server started included); the choice
        shown is left alone."""
        return gr.update(choices=self.library.names())

    def load(self, name: str | None) -> SamplingParams:
        try:
            return self.library.load(name) if name else SamplingParams()
        except HearthError as exc:
            raise field_error("Preset", str(exc)) from None

    def save(self, name: str, params: dict[str, Any]) -> Any:
        name = (name or "").strip()
        if not name:
            raise field_error("Save as", "give the preset a name")
        try:
            sampling = SamplingParams.model_validate(params.get("sampling") or {})
            path, shadows = self.library.save(name, sampling)
        except (HearthError, ValueError) as exc:
            raise field_error("Save as", f"preset not saved: {exc}") from None
        if shadows:
            gr.Info(
                f"Saved preset {path.stem} as your own copy in {path.parent}; "
                "the shipped preset of that name is unchanged (delete yours to use it again)"
            )
        else:
            gr.Info(f"Saved preset {path.stem}")
        return self.choices(path.stem)

    def check_delete(self, name: str | None) -> str:
        if not name:
            raise field_error("Preset", "choose a preset to delete")
        if not self.library.is_user(name):
            if self.library.is_shipped(name):
                raise field_error("Preset", f"{name!r} is shipped with Hearth and cannot be deleted")
            raise field_error("Preset", f"no preset named {name!r}")
        return name

    def delete(self, name: str) -> Any:
        try:
            shipped_again = self.library.delete(name)
        except (HearthError, ValueError) as exc:
            raise field_error("Preset", str(exc)) from None
        gr.Info(
            f"Deleted preset {name}" + ("; the shipped one of that name shows again" if shipped_again else "")
        )
        return self.choices(name if shipped_again else None)


def build_generation_panel(ctx: UIContext) -> GenerationControls:
    settings = ctx.app.settings
    start = ctx.params.value
    panel = PresetPanel(PresetLibrary.for_settings(settings))
    with gr.Row():
        preset = gr.Dropdown(
            label="Preset",
            choices=panel.library.names(),
            value=settings.preset,
            elem_id="preset-dropdown",
            scale=3,
        )
        preset_name = gr.Textbox(label="Save as", placeholder="preset name", scale=2, elem_id="preset-name")
        save = gr.Button("Save preset", scale=1, elem_id="preset-save")
        delete = ConfirmButton("Delete preset", "preset-delete")
    build_routing_panel(ctx)
    widgets: dict[str, gr.components.Component] = {}
    fields = SamplingParams.model_fields
    grouped = {n for names in GROUPS.values() for n in names}
    other = tuple(n for n in fields if n not in grouped)
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Generation")
            widgets.update(generation_widgets(start))
        for column in ((*list(GROUPS)[:3],), (*list(GROUPS)[3:], *(("Other",) if other else ()))):
            with gr.Column():
                for group in column:
                    with gr.Accordion(group, open=group in ("Temperature", "Truncation", "Penalties")):
                        for name in GROUPS.get(group, other):
                            widgets[name] = field_widget(name, fields[name], start["sampling"][name])
    controls = GenerationControls(widgets)
    inputs = controls.inputs

    gr.on(None, panel.on_load, None, [preset], show_progress="hidden")  # no inputs: page load only
    preset.input(lambda name: controls.fill(panel.load(name)), [preset], inputs).then(
        controls.params, inputs, ctx.params, preprocess=False
    )
    save.click(panel.save, [preset_name, ctx.params], [preset])
    delete.wire(panel.check_delete, [preset], panel.delete, [preset], cancel_on=[preset.input])
    controls.wire(ctx.params)
    return controls
