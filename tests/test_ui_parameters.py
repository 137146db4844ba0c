"""The Parameters tab: sampler widgets generated from SamplingParams, their text forms, and in a real
browser: presets fill the sliders and ctx.params, a PNG card becomes a character, the saved-chats list is
read on page load and a user's mistake there is a toast without a traceback. (The Session tab's
"Save UI settings" is tests/test_ui_session.py.)"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pytest
import yaml
from PIL import Image, PngImagePlugin

from webui.prompts.history import ChatHistory, HistoryStore
from webui.sampling import SamplingParams
from webui.ui.context import GENERATION_DEFAULTS, generation_request
from webui.ui.generation_panel import (
    GROUPS,
    GenerationControls,
    field_widget,
    from_widget_value,
    generation_widgets,
    to_widget_value,
)

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
FIELDS = SamplingParams.model_fields


def test_every_sampler_has_a_group_and_a_widget() -> None:
    grouped = [n for names in GROUPS.values() for n in names]
    assert len(grouped) == len(set(grouped)) and set(grouped) <= set(FIELDS)
    with gr.Blocks():
        temperature = field_widget("temperature", FIELDS["temperature"], 0.7)
        top_k = field_widget("top_k", FIELDS["top_k"], 40)
        breakers = field_widget("dry_sequence_breakers", FIELDS["dry_sequence_breakers"], ["\n", ":"])
    assert isinstance(temperature, gr.Slider) and (temperature.minimum, temperature.maximum) == (0, 5.0)
    assert isinstance(top_k, gr.Number) and top_k.precision == 0
    assert isinstance(breakers, gr.Textbox) and breakers.value == '"\\n", ":"'


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("dry_sequence_breakers", ["\n", ":", '"', "*"]),
        ("sampler_priority", ["top_k", "temperature"]),
        ("custom_token_bans", [1, 22]),
        ("logit_bias", {"5": -2.5}),
        ("banned_strings", ["bad, word", "x"]),
    ],
)
def test_text_forms_round_trip(name: str, value: Any) -> None:
    text = to_widget_value(name, value)
    assert isinstance(text, str)
    back = from_widget_value(name, FIELDS[name], text)
    parsed = SamplingParams.model_validate({name: back})
    expected = SamplingParams.model_validate({name: value})
    assert getattr(parsed, name) == getattr(expected, name)


def _controls() -> GenerationControls:
    with gr.Blocks():
        widgets = generation_widgets(GENERATION_DEFAULTS)
        for name, info in FIELDS.items():
            widgets[name] = field_widget(name, info, getattr(SamplingParams(), name))
    return GenerationControls(widgets)


def test_controls_build_a_valid_request_and_name_bad_fields() -> None:
    controls = _controls()
    values = {n: w.value for n, w in controls.widgets.items()} | {
        "temperature": 0.5,
        "stop": '"\\nUser:", "###"',
    }
    params = controls.params(*values.values())
    assert params["sampling"]["temperature"] == 0.5 and params["stop"] == ["\nUser:", "###"]
    request = generation_request(params, "Hi", max_new_tokens=3)
    assert request.sampling.temperature == 0.5 and request.max_new_tokens == 3
    with pytest.raises(gr.Error, match="top_p"):
        controls.params(*(values | {"top_p": 3}).values())
    with pytest.raises(gr.Error, match="logit_bias"):
        controls.params(*(values | {"logit_bias": "{oops"}).values())
    with pytest.raises(gr.Error, match="max_new_tokens"):
        generation_request(params | {"max_new_tokens": -1}, "Hi")


# -- in the browser --------------------------------------------------------------------------------------


def card_png(path: Path, name: str) -> Path:
    """A TavernAI/SillyTavern V2 card: a PNG whose tEXt chunk `chara` is base64 JSON."""
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": name, "description": f"{name} is a lighthouse keeper.", "first_mes": "Ahoy!"},
    }
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", base64.b64encode(json.dumps(card).encode()).decode())
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 120, 40)).save(buffer, "PNG", pnginfo=info)
    path.write_bytes(buffer.getvalue())
    return path


def open_subtab(page: Any, tab: str, sub: str | None = None) -> None:
    page.get_by_role("tab", name=tab, exact=True).click()
    if sub:
        page.get_by_role("tab", name=sub, exact=True).click()


def number_of(page: Any, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input[type=number]").first.input_value()


@pytest.mark.browser
def test_preset_fills_sliders_and_params(page: Any, ui_server: UIServer) -> None:
    open_subtab(page, "Parameters", "Generation")
    page.locator("#preset-dropdown input").click()
    page.get_by_role("option", name="Simple-1", exact=True).click()
    page.wait_for_function("document.querySelector('#param-temperature input[type=number]')?.value === '0.7'")
    assert number_of(page, "param-top_k") == "20"
    assert number_of(page, "param-repetition_penalty") == "1.15"
    ui_server.shot(page, "preset")
    # ctx.params followed: saving it as a preset writes the same values
    page.locator("#preset-name textarea, #preset-name input").first.fill("mine")
    page.locator("#preset-save").click()
    page.locator(".toast-body.info").first.wait_for()
    saved = yaml.safe_load((ui_server.app.settings.user_data_dir / "presets" / "mine.yaml").read_text())
    assert not (ui_server.app.settings.presets_dir / "mine.yaml").exists()  # never into the install folder
    assert saved == {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.15}


@pytest.mark.browser
def test_png_card_upload_becomes_a_character(page: Any, ui_server: UIServer, tmp_path: Path) -> None:
    card = card_png(tmp_path / "Keeper.png", "Mara")
    open_subtab(page, "Parameters", "Character")
    page.locator("#character-upload input[type=file]").set_input_files(str(card))
    page.wait_for_function("document.querySelector('#character-dropdown input')?.value === 'Mara'")
    assert page.locator("#character-context textarea").input_value() == "Mara is a lighthouse keeper."
    assert page.locator("#character-greeting textarea").input_value() == "Ahoy!"
    page.wait_for_selector("#character-picture img")
    ui_server.shot(page, "character")
    assert (ui_server.app.settings.user_data_dir / "characters" / "Mara.yaml").is_file()


@pytest.mark.browser
def test_saved_chats_are_listed_on_page_load_and_user_errors_print_no_traceback(
    page: Any, ui_server: UIServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    open_subtab(page, "Parameters", "Chat history")
    page.locator("#history-load").click()  # no chat saved yet: nothing to load
    page.locator(".toast-body.error", has_text="choose a chat to load").wait_for()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    page.locator("#history-upload input[type=file]").set_input_files(str(broken))
    page.locator(".toast-body.error", has_text="broken.json: the uploaded chat is not valid JSON").wait_for()
    assert "Traceback" not in capfd.readouterr().err  # a user's mistake is a toast, not a console dump
    # a chat saved after the page was built is listed when a page loads
    HistoryStore(ui_server.app.settings.user_data_dir).save(
        ChatHistory.new("Assistant", "Hi!").with_turn("user", "a chat saved meanwhile")
    )
    page.reload()
    page.wait_for_selector("button[role='tab']")
    open_subtab(page, "Parameters", "Chat history")
    page.wait_for_function(
        "document.querySelector('#history-dropdown input')?.value.includes('a chat saved meanwhile')"
    )
