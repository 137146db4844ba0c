"""Issue 13 in a real browser: Enter sends and Shift+Enter is a newline in Chat, Shift+Enter never generates
in Default, model text in angle brackets is shown literally, the saved-chats list survives a mode switch,
an uploaded chat opens, and Copy last reply / Remove last leave a typed message alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from webui.config import Settings
from webui.prompts.characters import Character
from webui.prompts.history import ChatHistory, HistoryStore

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
BOT = "#chat-chatbot [data-testid='bot']"
USER = "#chat-chatbot [data-testid='user']"
INPUT = "#chat-input textarea"
pytestmark = pytest.mark.browser


@pytest.fixture
def ui_settings(ui_settings: Settings) -> Settings:
    """EOS banned and short replies, so a sent message gets a quick, non-empty reply."""
    (ui_settings.presets_dir / "UI test.yaml").write_text(yaml.safe_dump({"ban_eos_token": True}), "utf-8")
    ui_settings.preset = "UI test"
    ui_settings.extra["generation"] = {"max_new_tokens": 8}
    return ui_settings


def no_error_toast(page: Any) -> None:
    assert page.locator(".toast-body").filter(has_text="ChatSummary").count() == 0
    assert page.locator(".toast-body").filter(has_text="Error").count() == 0


def test_enter_sends_and_shift_enter_is_a_newline(page: Any, ui_server: UIServer) -> None:
    ui_server.app.models.load("tiny-llama.gguf")
    page.reload()
    page.wait_for_selector(BOT)
    page.wait_for_selector("#chat-keys >> text=Shift+Enter: new line")
    page.click(INPUT)
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert page.input_value(INPUT) == "first line\nsecond line"
    assert page.locator(USER).count() == 0  # Shift+Enter did not send
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{USER} >> text=second line")
    page.wait_for_function(f"document.querySelector('{INPUT}').value === ''")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == 2')


def test_shift_enter_in_default_is_a_newline_not_a_generation(page: Any, ui_server: UIServer) -> None:
    page.click("button[role='tab']:has-text('Default')")
    page.wait_for_selector("#default-keys >> text=Ctrl+Enter: generate")
    page.click("#default-prompt textarea")
    page.keyboard.type("Once upon")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("a time")
    assert page.input_value("#default-prompt textarea") == "Once upon\na time"
    page.wait_for_timeout(300)  # a generation would have been requested by now: none may be
    assert page.locator(".toast-body").count() == 0  # with no model, a generation would toast
    page.keyboard.press("Control+Enter")  # Ctrl+Enter does generate: here, the no-model toast
    page.wait_for_selector(".toast-body >> text=/no model is loaded/i")


def test_angle_brackets_in_chat_are_shown_literally(page: Any, ui_server: UIServer) -> None:
    store = HistoryStore(ui_server.app.settings.user_data_dir)
    reply = "a<b then b>a. <think>hidden?</think> std::vector<int> v; **bold** `x<y>`"
    store.save(ChatHistory.new("Assistant", "Hi!").with_turn("user", "compare").with_turn("assistant", reply))
    page.reload()
    page.wait_for_selector(f"{BOT} strong >> text=bold")
    text = page.locator(BOT).nth(1).inner_text()
    assert "a<b then b>a." in text and "<think>hidden?</think>" in text and "std::vector<int> v;" in text
    assert page.locator(f"{BOT} code >> text=x<y>").count() == 1


def test_saved_chats_survive_a_mode_switch_and_an_upload_opens(page: Any, ui_server: UIServer, tmp_path: Path) -> None:
    store = HistoryStore(ui_server.app.settings.user_data_dir)
    store.save(ChatHistory.new("Assistant", "Hi!").with_turn("user", "a saved chat"))
    page.reload()
    page.wait_for_selector(f"{USER} >> text=a saved chat")
    page.click("#chat-mode label:has-text('instruct') >> nth=-1")
    page.wait_for_timeout(500)
    no_error_toast(page)
    page.click("button[role='tab']:has-text('Parameters')")
    page.click("button[role='tab']:has-text('Chat history')")
    page.wait_for_function("document.querySelector('#history-dropdown input').value.includes('a saved chat')")
    page.click("#history-save")
    page.wait_for_selector(".toast-body >> text=/Saved chat/")
    no_error_toast(page)

    upload = tmp_path / "tgw-chat.json"
    upload.write_text(json.dumps({"internal": [["uploaded question", "uploaded answer"]]}), "utf-8")
    page.set_input_files("#history-upload input[type='file']", str(upload))
    page.wait_for_selector(".toast-body >> text=/Imported chat/")
    page.wait_for_function("document.querySelector('#history-dropdown input').value.includes('uploaded question')")
    no_error_toast(page)
    page.click("button[role='tab']:has-text('Chat') >> nth=0")
    page.wait_for_selector(f"{USER} >> text=uploaded question")  # the uploaded chat is open


def test_the_cards_user_name_greets_the_user(page: Any, ui_server: UIServer, tmp_path: Path) -> None:
    card = tmp_path / "Cap.yaml"
    card.write_text(yaml.safe_dump(Character("Cap", "A pirate.", "Ahoy, {{user}}!", user_name="Peter").to_dict()))
    page.click("button[role='tab']:has-text('Parameters')")
    page.click("button[role='tab']:has-text('Character')")
    page.set_input_files("#character-upload input[type='file']", str(card))
    page.wait_for_function(
        "document.querySelector('#character-user-name input, #character-user-name textarea').value === 'Peter'"
    )
    page.click("button[role='tab']:has-text('Chat') >> nth=0")
    page.wait_for_selector(f"{BOT} >> text=Ahoy, Peter!")


def test_copy_and_remove_last_keep_what_is_typed(page: Any, ui_server: UIServer) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    store = HistoryStore(ui_server.app.settings.user_data_dir)
    store.save(ChatHistory.new("Assistant", "Hi!").with_turn("user", "old question").with_turn("assistant", "old answer"))
    page.reload()
    page.wait_for_selector(f"{BOT} >> text=old answer")
    page.fill(INPUT, "half-typed")
    page.click("#chat-copy-last")
    page.wait_for_selector(".toast-body >> text=/Last reply copied/")
    page.wait_for_function("navigator.clipboard.readText().then(t => t === 'old answer')")
    assert page.input_value(INPUT) == "half-typed"
    page.click("#chat-remove-last")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == 1')
    assert page.input_value(INPUT) == "half-typed"
    assert len(store.latest("Assistant").turns) == 1
