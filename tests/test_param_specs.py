"""One way to declare a setting: `ParamSpec` validation, the specs read from pydantic fields (every sampler)
and from an extension's ``params``, and the one widget builder and CLI flag builder fed by them."""

from __future__ import annotations

import argparse
from typing import Literal

import gradio as gr
import pytest
from pydantic import BaseModel, Field

from webui.config import add_param_flag
from webui.errors import LoaderError
from webui.loader_api import LoaderParam
from webui.param_specs import ParamError, ParamSpec, spec_from_field, spec_from_value, specs_from
from webui.sampling import SamplingParams
from webui.ui.generation_panel import field_widget
from webui.ui.param_widgets import widget_for

FIELDS = SamplingParams.model_fields


@pytest.mark.parametrize(
    ("spec", "raw", "value"),
    [
        (ParamSpec("on", "bool", False), "Yes", True),
        (ParamSpec("on", "bool", True), "off", False),
        (ParamSpec("n", "int", 0, minimum=0, maximum=10), 3.0, 3),
        (ParamSpec("n", "int", 0), "7", 7),
        (ParamSpec("x", "float", 0.5, maximum=1), "0.25", 0.25),
        (ParamSpec("pick", "choice", "a", choices=("a", "b")), "b", "b"),
        (ParamSpec("s", "str", "d"), None, "d"),
        (ParamSpec("l", "list", []), ("a", "b"), ["a", "b"]),
    ],
)
def test_coerce_converts_what_forms_and_files_send(spec: ParamSpec, raw: object, value: object) -> None:
    assert spec.coerce(raw) == value and type(spec.coerce(raw)) is type(value)


@pytest.mark.parametrize(
    ("spec", "raw", "message"),
    [
        (ParamSpec("on", "bool", False), "maybe", "on: expected bool"),
        (ParamSpec("n", "int", 0), 2.5, "n: expected int"),
        (ParamSpec("n", "int", 0, minimum=1, maximum=10), 0, "n: 0 is below the minimum 1"),
        (ParamSpec("x", "float", 0.0, maximum=1), 1.5, "x: 1.5 is above the maximum 1"),
        (ParamSpec("pick", "choice", "a", choices=("a", "b")), "c", "'c' is not one of a, b"),
        (ParamSpec("d", "dict", {}), "nope", "d: expected dict"),
    ],
)
def test_coerce_refuses_with_the_setting_named(spec: ParamSpec, raw: object, message: str) -> None:
    with pytest.raises(ParamError, match=message) as caught:
        spec.coerce(raw)
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError keep working


def test_loader_param_is_a_spec_raising_loader_errors() -> None:
    param = LoaderParam("n_ctx", "int", 2048, "Context window in tokens.", 16, 1 << 20, step=256)
    assert isinstance(param, ParamSpec)
    assert (param.name, param.kind, param.default, param.help, param.minimum, param.step) == (
        "n_ctx",
        "int",
        2048,
        "Context window in tokens.",
        16,
        256,
    )
    with pytest.raises(LoaderError, match="n_ctx: 8 is below the minimum 16"):
        param.coerce(8)
    with pytest.raises(ValueError, match="kind 'number'"):
        ParamSpec("x", "number", 0)


def test_every_sampler_field_reads_as_a_spec_with_its_range_and_description() -> None:
    for name, info in FIELDS.items():
        spec = spec_from_field(name, info)
        assert spec.name == name and spec.kind != "any", name
        assert spec.help == info.description and spec.help, name
        assert spec.coerce(spec.default) == getattr(SamplingParams(), name), name
    temperature = spec_from_field("temperature", FIELDS["temperature"])
    assert (temperature.kind, temperature.default, temperature.minimum, temperature.maximum) == (
        "float",
        1.0,
        0,
        100,
    )
    assert temperature.step == 0.01
    assert spec_from_field("seed", FIELDS["seed"]).minimum == -1
    assert spec_from_field("logit_bias", FIELDS["logit_bias"]).kind == "dict"
    assert spec_from_field("sampler_priority", FIELDS["sampler_priority"]).kind == "list"


class Typed(BaseModel):
    depth: int = Field(4, ge=1, le=100, description="Messages searched.")
    mode: Literal["fast", "slow"] = Field("fast", description="How hard to look.")
    note: str | None = Field(None, description="Optional note.")


def test_specs_from_plain_defaults_specs_and_a_pydantic_model() -> None:
    plain = specs_from({"shout": False, "limit": 0, "ratio": 0.5, "text": "", "words": ["a"]})
    assert [s.kind for s in plain.values()] == ["bool", "int", "float", "str", "list"]
    mixed = specs_from({"budget": ParamSpec("", "int", 512, "Tokens.", 0, 8192), "shout": False})
    assert mixed["budget"] == ParamSpec("budget", "int", 512, "Tokens.", 0, 8192)
    typed = specs_from(Typed)
    assert typed["depth"] == ParamSpec("depth", "int", 4, "Messages searched.", 1, 100)
    assert (typed["mode"].kind, typed["mode"].choices) == ("choice", ("fast", "slow"))
    assert (typed["note"].kind, typed["note"].default) == ("str", None)
    assert spec_from_value("x", object()).kind == "any"


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (["a"], "params must return"),
        ({1: 2}, "params must return"),
        ({"a": ParamSpec("b", "int", 0)}, "named 'b'"),
        ({"a": ParamSpec("", "int", 50, "", 0, 10)}, "a: 50 is above the maximum 10"),
    ],
)
def test_specs_from_refuses_nonsense(declared: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        specs_from(declared)


def test_one_widget_builder_for_loaders_samplers_and_extensions() -> None:
    """The same declaration gives the same widget whoever declares it: a loader, a pydantic field (the
    samplers) or an extension; the description is the tooltip."""
    loader = LoaderParam("depth", "int", 4, "Messages searched.", 1, 100)
    with gr.Blocks():
        from_loader = widget_for(loader, 7, "loader-x-")
        from_field = widget_for(specs_from(Typed)["depth"], 7, "loader-x-")
        choice = widget_for(specs_from(Typed)["mode"])
        locked = widget_for(loader, 9, locked="not here")
        number = widget_for(ParamSpec("budget", "int", 512, "Tokens.", 0, 100_000), label="budget tokens")
        text = widget_for(ParamSpec("bias", "str", "*grins*"), lines=3)
        with pytest.raises(ValueError, match="no widget"):
            widget_for(ParamSpec("blob", "any", None))
    for widget in (from_loader, from_field):
        assert isinstance(widget, gr.Slider)
        assert (widget.minimum, widget.maximum, widget.step, widget.value) == (1, 100, 1, 7)
        assert (widget.label, widget.info, widget.elem_id) == (
            "depth",
            "Messages searched.",
            "loader-x-depth",
        )
    assert isinstance(choice, gr.Dropdown) and [c[1] for c in choice.choices] == ["fast", "slow"]
    assert locked.value == 4 and not locked.interactive and locked.info.endswith("Disabled: not here.")
    assert isinstance(number, gr.Number) and (number.label, number.maximum, number.precision) == (
        "budget tokens",
        100_000,
        0,
    )
    assert isinstance(text, gr.Textbox) and text.lines == 3 and text.info is None


def test_sampler_widgets_come_from_their_specs() -> None:
    """Every sampler's widget is the shared builder's, with the field's description as its tooltip."""
    defaults = SamplingParams()
    with gr.Blocks():
        widgets = {name: field_widget(name, info, getattr(defaults, name)) for name, info in FIELDS.items()}
    for name, widget in widgets.items():
        assert widget.info == FIELDS[name].description and widget.elem_id == f"param-{name}", name
    smoothing = widgets["smoothing_factor"]  # validated to 100, the slider stops at a practical 10
    assert isinstance(smoothing, gr.Slider) and (smoothing.maximum, smoothing.step) == (10.0, 0.01)
    assert isinstance(widgets["mirostat_tau"], gr.Slider) and widgets["mirostat_tau"].maximum == 20
    assert isinstance(widgets["seed"], gr.Number) and isinstance(widgets["logit_bias"], gr.Textbox)


def test_one_cli_flag_builder() -> None:
    parser = argparse.ArgumentParser(prog="x")
    group = parser.add_argument_group("g")
    add_param_flag(group, ParamSpec("n_batch", "int", 512, "Tokens per batch.", 1, 8192))
    add_param_flag(group, ParamSpec("cache", "choice", "f16", "KV cache.", choices=("f16", "q8_0")))
    add_param_flag(group, ParamSpec("mmap", "bool", True, "Memory-map."))
    args = vars(parser.parse_args(["--n-batch", "64", "--cache", "q8_0", "--no-mmap"]))
    assert args == {"loader:n_batch": 64, "loader:cache": "q8_0", "loader:mmap": False}
    text = parser.format_help()
    assert "--n-batch INT" in text and "Tokens per batch. (default: 512)" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--cache", "q2"])


def test_a_secret_is_a_password_box_and_never_shown() -> None:
    key = ParamSpec("api_key", "str", "", "The server's key.", secret=True)
    assert key.shown("sk-123") == "***" and key.shown("") == ""
    assert ParamSpec("url", "str", "").shown("http://x") == "http://x"
    with gr.Blocks():
        assert widget_for(key).type == "password"
