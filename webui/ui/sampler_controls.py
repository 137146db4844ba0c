"""The Generation sub-tab: presets, every sampler setting, and the request-level generation settings.

Widgets are generated from `SamplingParams`' pydantic fields (type and ge/le bounds), so a sampler added
to the model appears here without retyping; `GROUPS` only decides where it is shown ("Other" catches the
rest). Any edit rebuilds ``ctx.params`` and validates it once, naming the field on error. Under the presets,
a panel says where the current settings run on the loaded model (`sampler_routing_view`).
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from webui.loader_api import HearthError
from webui.sampling import SamplingParams, delete_preset, list_presets, load_preset, save_preset
from webui.ui.context import GENERATION_DEFAULTS, UIContext, sampling_params
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
        "banned_strings",
        "custom_token_bans",
        "logit_bias",
        "ban_eos_token",
    ),
    "Sampler order and seed": ("sampler_priority", "do_sample", "seed"),
}
#: Practical slider ends where the validated range is far wider than anyone uses (typing still allows more).
SLIDER_MAX = {"temperature": 5.0, "dynatemp_low": 5.0, "dynatemp_high": 5.0, "dynatemp_exponent": 5.0}
#: Fields shown one entry per line; other string lists use tgw's quoted, comma-separated form ("\n", "###").
LINE_LISTS = {"sampler_priority"}
GENERATION_FIELDS = tuple(GENERATION_DEFAULTS)


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, Ge | Gt):
            low = item.ge if isinstance(item, Ge) else item.gt
        elif isinstance(item, Le | Lt):
            high = item.le if isinstance(item, Le) else item.lt
    return low, high


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


def from_widget_value(name: str, info: FieldInfo | None, value: Any) -> Any:
    """A widget's value back as the setting; text forms of lists and maps are parsed here."""
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
        raise gr.Error(
            f"{name}: {exc.msg} (expected {'a JSON object' if annotation.startswith('dict') else 'quoted strings separated by commas'})"
        ) from None
    return value


def field_widget(name: str, info: FieldInfo, value: Any) -> gr.components.Component:
    """One widget for one setting, chosen from its type and bounds."""
    common = {
        "label": name,
        "value": to_widget_value(name, value),
        "elem_id": f"param-{name}",
        "info": info.description,
    }
    low, high = _bounds(info)
    if info.annotation is bool:
        return gr.Checkbox(**common)
    if info.annotation in (int, float) and low is not None and high is not None and high <= 100:
        step = 1 if info.annotation is int else 0.01
        return gr.Slider(minimum=low, maximum=SLIDER_MAX.get(name, high), step=step, **common)
    if info.annotation in (int, float):
        return gr.Number(minimum=low, maximum=high, precision=0 if info.annotation is int else None, **common)
    lines = 4 if name in LINE_LISTS or name in ("grammar_string", "negative_prompt") else 1
    return gr.Textbox(lines=lines, max_lines=20 if lines > 1 else 1, **common)


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

    def params(self, *values: Any) -> dict[str, Any]:
        """Widget values -> the validated ``ctx.params`` dict (gr.Error names a bad field)."""
        fields = SamplingParams.model_fields
        raw = {n: from_widget_value(n, fields.get(n), v) for n, v in zip(self.names, values, strict=True)}
        generation = {n: raw.pop(n) for n in GENERATION_FIELDS}
        generation["stop"] = from_widget_value("stop", FieldInfo(annotation=list[str]), generation["stop"])
        for key in ("max_new_tokens", "truncation_length"):
            generation[key] = int(generation[key] or 0)
        sampling = sampling_params({"sampling": raw}).model_dump()
        return {"sampling": sampling, **generation}

    def fill(self, sampling: SamplingParams) -> list[Any]:
        """Updates for every widget: the samplers from `sampling`, generation settings unchanged."""
        values = sampling.model_dump()
        return [
            gr.update(value=to_widget_value(n, values[n])) if n in values else gr.update() for n in self.names
        ]


def build_generation_tab(ctx: UIContext) -> GenerationControls:
    settings = ctx.app.settings
    start = ctx.params.value
    with gr.Row():
        preset = gr.Dropdown(
            label="Preset",
            choices=list_presets(settings.presets_dir),
            value=settings.preset,
            elem_id="preset-dropdown",
            scale=3,
        )
        preset_name = gr.Textbox(label="Save as", placeholder="preset name", scale=2, elem_id="preset-name")
        save = gr.Button("Save preset", scale=1, elem_id="preset-save")
        delete = gr.Button("Delete preset", scale=1, variant="stop", elem_id="preset-delete")
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

    def pick(name: str | None) -> list[Any]:
        try:
            sampling = load_preset(settings.presets_dir, name) if name else SamplingParams()
        except HearthError as exc:
            raise gr.Error(str(exc)) from None
        return controls.fill(sampling)

    def save_current(name: str, params: dict[str, Any]) -> Any:
        if not name.strip():
            raise gr.Error("give the preset a name")
        try:
            path = save_preset(settings.presets_dir, name.strip(), sampling_params(params))
        except (HearthError, ValueError) as exc:
            raise gr.Error(f"preset not saved: {exc}") from None
        gr.Info(f"Saved preset {path.stem}")
        return gr.update(choices=list_presets(settings.presets_dir), value=path.stem)

    def delete_current(name: str | None) -> Any:
        try:
            delete_preset(settings.presets_dir, name or "")
        except (HearthError, ValueError) as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Deleted preset {name}")
        return gr.update(choices=list_presets(settings.presets_dir), value=None)

    inputs = controls.inputs
    preset.input(pick, [preset], inputs).then(controls.params, inputs, ctx.params)
    save.click(save_current, [preset_name, ctx.params], [preset])
    delete.click(delete_current, [preset], [preset])
    gr.on([w.input for w in inputs], controls.params, inputs, ctx.params, show_progress="hidden")
    return controls
