"""The Character sub-tab in a real browser: the list is live across a page reload (with the preset list),
an imported SillyTavern card keeps every field and its example dialogue is editable, Delete asks first and
the built-in Assistant stays."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.test_characters import FULL_V2_CARD, b64json, png_card
from webui.config import Settings
from webui.prompts.characters import Character, CharacterStore

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
PETER = "Peter keeps bees."


@pytest.fixture
def ui_settings(ui_settings: Settings) -> Settings:
    """Peter exists when the server starts and is the chosen character (as a saved "chat" setting makes him)."""
    CharacterStore(ui_settings.user_data_dir).save(Character("Peter", context="(as at server start)"))
    ui_settings.extra["chat"] = {"character": "Peter"}
    return ui_settings


@pytest.fixture
def ui_server(ui_server: UIServer) -> UIServer:
    """Peter edited after the server started (before the page loads): the page must show this version,
    and a test waiting for it knows the page-load refresh is done before it acts."""
    CharacterStore(ui_server.app.settings.user_data_dir).save(Character("Peter", context=PETER))
    return ui_server


def open_loaded(page: Any) -> None:
    """The Character sub-tab once the page-load refresh has filled it."""
    open_subtab(page, "Parameters", "Character")
    wait_value(page, "#character-dropdown input", "Peter")
    wait_value(page, "#character-context textarea", PETER)


def open_subtab(page: Any, tab: str, sub: str | None = None) -> None:
    page.get_by_role("tab", name=tab, exact=True).click()
    if sub:
        page.get_by_role("tab", name=sub, exact=True).click()


def wait_value(page: Any, selector: str, value: str) -> None:
    page.wait_for_function(
        "([sel, value]) => document.querySelector(sel)?.value === value", arg=[selector, value]
    )


def choose(page: Any, dropdown: str, option: str) -> None:
    page.locator(f"#{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def info_toast(page: Any, text: str) -> None:
    page.locator(".toast-body.info", has_text=text).first.wait_for()


def textarea(page: Any, elem_id: str) -> Any:
    return page.locator(f"#{elem_id} textarea")


def cancel_then_confirm_delete(page: Any, button: str, name: str, kept: Path) -> None:
    """Delete asks about `name`; Cancel keeps `kept` (its file); asked again, Confirm deletes."""
    confirm = page.locator(f"#{button}-confirm")
    page.locator(f"#{button}").click()
    confirm.wait_for()
    assert name in confirm.inner_text()
    page.locator(f"#{button}-cancel").click()
    confirm.wait_for(state="hidden")
    assert kept.is_file()
    page.locator(f"#{button}").click()
    confirm.click()


@pytest.mark.browser
def test_new_character_and_preset_are_listed_after_a_reload(page: Any, ui_server: UIServer) -> None:
    characters = ui_server.app.settings.user_data_dir / "characters"
    open_loaded(page)  # the page shows Peter as saved after the server started
    textarea(page, "character-context").fill("Peter keeps bees and goats.")
    page.locator("#character-save").click()
    info_toast(page, "Saved character Peter")
    textarea(page, "character-name").fill("Quinn")
    textarea(page, "character-context").fill("Quinn sails.")
    page.locator("#character-save").click()
    info_toast(page, "Saved character Quinn")
    assert (characters / "Quinn.yaml").is_file()
    page.get_by_role("tab", name="Generation", exact=True).click()
    page.locator("#preset-name textarea").fill("Mine")
    page.locator("#preset-save").click()
    info_toast(page, "Saved preset Mine")
    assert (ui_server.app.settings.user_data_dir / "presets" / "Mine.yaml").is_file()

    page.reload()
    page.wait_for_selector("button[role='tab']")
    open_subtab(page, "Parameters", "Character")
    # the session's character (Peter) is chosen and shown as saved, not as it was at server start
    wait_value(page, "#character-dropdown input", "Peter")
    wait_value(page, "#character-context textarea", "Peter keeps bees and goats.")
    choose(page, "character-dropdown", "Quinn")
    wait_value(page, "#character-context textarea", "Quinn sails.")
    page.get_by_role("tab", name="Generation", exact=True).click()
    choose(page, "preset-dropdown", "Mine")
    wait_value(page, "#preset-dropdown input", "Mine")
    ui_server.shot(page, "after-reload")
    # a character saved by someone else (another tab, a script) appears on Refresh
    CharacterStore(ui_server.app.settings.user_data_dir).save(Character("Rosa", context="Rosa paints."))
    open_subtab(page, "Parameters", "Character")
    page.locator("#character-refresh").click()
    choose(page, "character-dropdown", "Rosa")
    wait_value(page, "#character-context textarea", "Rosa paints.")


@pytest.mark.browser
def test_card_keeps_every_field_and_its_example_dialogue_is_editable(
    page: Any, ui_server: UIServer, tmp_path: Path
) -> None:
    card_file = tmp_path / "Seraphina.png"
    card_file.write_bytes(png_card({"chara": b64json(FULL_V2_CARD)}))
    open_loaded(page)
    page.locator("#character-upload input[type=file]").set_input_files(str(card_file))
    wait_value(page, "#character-dropdown input", "Seraphina")
    wait_value(page, "#character-example-dialogue textarea", FULL_V2_CARD["data"]["mes_example"])
    dialogue = "<START>\n{{user}}: Is the glade safe?\n{{char}}: While I watch it."
    textarea(page, "character-example-dialogue").fill(dialogue)
    page.locator("#character-save").click()
    info_toast(page, "Saved character Seraphina")
    saved = yaml.safe_load(
        (ui_server.app.settings.user_data_dir / "characters" / "Seraphina.yaml").read_text()
    )
    assert saved["example_dialogue"] == dialogue
    assert saved["card"] == FULL_V2_CARD  # creator notes, book, tags, extensions... all kept
    # export: the card as imported, with the edited example dialogue
    page.locator("#character-export").click()
    link = page.locator("#character-file a").first
    link.wait_for()
    with page.expect_download() as download:
        link.click()
    exported = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    expected = copy.deepcopy(FULL_V2_CARD)
    expected["data"]["mes_example"] = dialogue
    assert exported == expected
    ui_server.shot(page, "card")


@pytest.mark.browser
def test_delete_asks_first_and_the_built_in_assistant_stays(page: Any, ui_server: UIServer) -> None:
    peter = ui_server.app.settings.user_data_dir / "characters" / "Peter.yaml"
    confirm = page.locator("#character-delete-confirm")
    open_loaded(page)
    cancel_then_confirm_delete(page, "character-delete", "Peter", peter)
    info_toast(page, "Deleted character Peter")
    wait_value(page, "#character-dropdown input", "Assistant")
    assert not peter.exists()
    # the built-in Assistant is refused at the first click: a toast, no question
    page.locator("#character-delete").click()
    page.locator(".toast-body.error", has_text="built-in Assistant cannot be deleted").wait_for()
    assert not confirm.is_visible()
    wait_value(
        page, "#character-context textarea", CharacterStore(peter.parent.parent).load("Assistant").context
    )
    ui_server.shot(page, "delete")
