"""The extensions UI in a real browser: an extension's own blocks, its settings applied and saved to
settings.yaml, and a failing extension reported as a toast."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pytest
import yaml

from webui.app import App
from webui.config import Settings
from webui.param_specs import ParamSpec
from webui.plugins import hookimpl
from webui.ui import free_port
from webui.ui.context import UIContext, default_character_state, default_params
from webui.ui.extensions_ui import apply_settings, build_extension_blocks, build_extensions_settings

if TYPE_CHECKING:
    from tests.ui_harness import UIServer  # noqa: F401

pytest_plugins = ["tests.ui_harness"]


def test_apply_settings_enables_and_reports(models_dir: Path, tmp_path: Path) -> None:
    app = App.create(Settings(models_dir=models_dir, user_data_dir=tmp_path, extensions=["example"]))
    text = apply_settings(app.extensions, ["character_bias", "missing"], {"example": {"shout": True}})
    assert app.extensions.enabled == ["character_bias"] and app.settings.extensions == ["character_bias"]
    assert "Could not enable missing" in text
    with pytest.raises(ValueError):
        apply_settings(app.extensions, ["character_bias"], {"character_bias": {"nope": 1}})


@pytest.fixture
def extension_page(browser: Any, models_dir: Path, tmp_path: Path) -> Iterator[tuple[App, Any, Path]]:
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text("theme: light\n")
    app = App.create(Settings(models_dir=models_dir, user_data_dir=tmp_path / "user", settings_file=settings_file,
                              extensions=["example", "character_bias"]))
    with gr.Blocks() as blocks:
        ctx = UIContext(app, gr.State(default_params(app)), gr.State(default_character_state(app)),
                        gr.State(None), gr.State(None))
        build_extensions_settings(ctx)
        build_extension_blocks(ctx)
    _, url, _ = blocks.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                      quiet=True)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(90_000)  # generous: CI runs the whole suite on 2 busy cores
    page.goto(url)
    try:
        yield app, page, settings_file
    finally:
        context.close()
        blocks.close()


@pytest.mark.browser
def test_extension_blocks_settings_and_failure_toast(extension_page: tuple[App, Any, Path]) -> None:
    app, page, settings_file = extension_page
    page.get_by_text("The example extension is on.").wait_for()  # its ui hook rendered
    page.locator("#extension-settings-character_bias").get_by_text("character_bias settings").click()
    bias = page.locator("#extension-character_bias-bias textarea")
    bias.fill("*grins*")
    page.locator("#extensions-save").click()
    page.locator("#extensions-status").get_by_text("Saved to").wait_for()
    saved = yaml.safe_load(settings_file.read_text())
    assert saved["theme"] == "light" and saved["extensions"] == ["example", "character_bias"]
    assert saved["extension_params"] == {"character_bias": {"bias": "*grins*"}}
    assert app.extensions.params("character_bias")["bias"] == "*grins*"

    app.extensions.fail("example", "output_modifier", RuntimeError("kaput"))
    toast = page.locator(".toast-body.warning")
    toast.wait_for()
    assert "example" in toast.inner_text() and "kaput" in toast.inner_text()
    assert app.extensions.enabled == ["character_bias"]

    # enabling one at runtime: its settings appear at once, and apply
    page.locator("#extensions-enabled").get_by_label("lorebook").check()
    page.locator("#extensions-apply").click()
    page.locator("#extension-settings-lorebook").get_by_text("lorebook settings").click()
    budget = page.locator("#extension-lorebook-budget_tokens input[type=number]")
    budget.fill("256")
    page.locator("#extensions-apply").click()
    deadline = time.monotonic() + 90
    while app.extensions.params("lorebook")["budget_tokens"] != 256 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert app.extensions.params("lorebook")["budget_tokens"] == 256


class TypedSettings:
    """An extension declaring typed settings: a range that makes a slider, one too wide for a slider."""

    @hookimpl
    def params(self) -> dict[str, Any]:
        return {
            "depth": ParamSpec("", "int", 4, "Messages searched for keywords.", 1, 100),
            "budget": ParamSpec("", "int", 512, "Most tokens of entries added to the prompt.", 0, 100_000),
        }


@pytest.mark.browser
def test_typed_extension_settings_get_ranged_widgets_tooltips_and_named_errors(
    browser: Any, models_dir: Path, tmp_path: Path
) -> None:
    app = App.create(Settings(models_dir=models_dir, user_data_dir=tmp_path / "user"))
    app.extensions.add("typed", TypedSettings())
    assert app.extensions.set_enabled(["typed"]) == ["typed"]
    with gr.Blocks() as blocks:
        ctx = UIContext(app, gr.State(default_params(app)), gr.State(default_character_state(app)),
                        gr.State(None), gr.State(None))
        build_extensions_settings(ctx)
    _, url, _ = blocks.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                      quiet=True)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(90_000)
    try:
        page.goto(url)
        page.locator("#extension-settings-typed").get_by_text("typed settings").click()
        page.locator("#extension-typed-depth input[type=range]").wait_for()  # a slider: 1..100
        page.locator("#extension-typed-depth").get_by_text("Messages searched for keywords.").wait_for()
        budget = page.locator("#extension-typed-budget input[type=number]")
        page.locator("#extension-typed-budget").get_by_text("Most tokens of entries").wait_for()
        budget.fill("200000")
        page.locator("#extensions-apply").click()
        error = page.locator(".toast-body.error", has_text="budget: 200000 is above the maximum 100000")
        error.wait_for()
        assert budget.input_value() == "200000" and app.extensions.params("typed")["budget"] == 512
        budget.fill("256")
        page.locator("#extensions-apply").click()
        page.locator("#extensions-status").get_by_text("Enabled: typed.").wait_for()
        assert app.extensions.params("typed") == {"depth": 4, "budget": 256}
    finally:
        context.close()
        blocks.close()
