"""The Generation sub-tab's presets and fields in a real browser: a preset saved under a shipped name becomes
the user's copy (and says so), shipped presets cannot be deleted, Delete asks first; typing validates when a
value is committed, with one toast naming the field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.test_ui_characters import cancel_then_confirm_delete

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
ERRORS = ".toast-body.error [data-testid='toast-text']"


def open_generation(page: Any) -> None:
    page.get_by_role("tab", name="Parameters", exact=True).click()
    page.get_by_role("tab", name="Generation", exact=True).click()


def choose_preset(page: Any, name: str) -> None:
    page.locator("#preset-dropdown input").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function(
        "(name) => document.querySelector('#preset-dropdown input')?.value === name", arg=name
    )


def number_box(page: Any, name: str) -> Any:
    return page.locator(f"#param-{name} input[type=number]").first


def type_number(page: Any, name: str, text: str) -> None:
    """Type into a setting's number box key by key, then leave it (Tab), as a person does."""
    box = number_box(page, name)
    box.fill("")
    box.press_sequentially(text, delay=30)
    box.press("Tab")


@pytest.mark.browser
def test_saving_a_shipped_name_makes_a_user_copy_and_shipped_presets_stay(
    page: Any, ui_server: UIServer
) -> None:
    settings = ui_server.app.settings
    shipped = settings.presets_dir / "Simple-1.yaml"
    shipped_text = shipped.read_text(encoding="utf-8")
    mine = settings.user_data_dir / "presets" / "Simple-1.yaml"
    confirm = page.locator("#preset-delete-confirm")
    open_generation(page)
    choose_preset(page, "Simple-1")
    page.wait_for_function("document.querySelector('#param-temperature input[type=number]')?.value === '0.7'")
    type_number(page, "temperature", "0.3")
    page.locator("#preset-name textarea").fill("Simple-1")
    page.locator("#preset-save").click()
    page.locator(".toast-body.info", has_text="your own copy").wait_for()
    assert yaml.safe_load(mine.read_text(encoding="utf-8"))["temperature"] == 0.3
    assert shipped.read_text(encoding="utf-8") == shipped_text
    # a shipped preset is refused at the first click: a toast naming it, no question
    choose_preset(page, "min_p")
    page.locator("#preset-delete").click()
    page.locator(
        ".toast-body.error", has_text="'min_p' is shipped with Hearth and cannot be deleted"
    ).wait_for()
    assert not confirm.is_visible()
    # the user's copy: Delete asks, Cancel keeps it, Confirm deletes it and the shipped one is back
    choose_preset(page, "Simple-1")
    cancel_then_confirm_delete(page, "preset-delete", "Simple-1", mine)
    page.locator(".toast-body.info", has_text="the shipped one of that name shows again").wait_for()
    assert not mine.exists() and shipped.read_text(encoding="utf-8") == shipped_text
    choose_preset(page, "Simple-1")
    page.wait_for_function("document.querySelector('#param-temperature input[type=number]')?.value === '0.7'")
    ui_server.shot(page, "presets")


@pytest.mark.browser
def test_typing_validates_on_commit_with_one_toast_naming_the_field(page: Any, ui_server: UIServer) -> None:
    open_generation(page)
    stop = page.locator("#param-stop textarea, #param-stop input").first
    stop.click()
    stop.press_sequentially('"\\nUser:", "###"', delay=30)  # invalid until the last quote
    stop.press("Tab")
    type_number(page, "top_k", "-3")
    page.locator(ERRORS).first.wait_for()
    assert page.locator(ERRORS).all_inner_texts() == ["top_k: Input should be greater than or equal to 0"]
    assert stop.input_value() == '"\\nUser:", "###"'  # what was typed stays
    assert number_box(page, "top_k").input_value() == "-3"
    page.locator(".toast-body.error [data-testid='toast-close']").click()
    page.locator(ERRORS).first.wait_for(state="detached")
    type_number(page, "top_k", "40")
    type_number(page, "top_p", "1.5")  # a slider's box: followed quietly while typed, checked on leaving
    page.locator(ERRORS).first.wait_for()
    assert page.locator(ERRORS).all_inner_texts() == ["top_p: Input should be less than or equal to 1"]
    ui_server.shot(page, "validation")
    # what was committed is in ctx.params: "Save UI settings" writes it
    page.get_by_role("tab", name="Session", exact=True).click()
    page.locator("#session-save").click()
    page.wait_for_function("document.querySelector('#session-saved')?.textContent.includes('Saved')")
    saved = yaml.safe_load(ui_server.app.settings.settings_file.read_text(encoding="utf-8"))
    assert saved["generation"]["stop"] == ["\nUser:", "###"]
    assert saved["sampling"]["top_k"] == 40
