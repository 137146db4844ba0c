"""The chat's prompt options next to text-generation-webui's (issue 13): "Start reply with", "Custom system
message", "Command for chat-instruct mode", and the Instruction template panel's edits used by the chat and
saved as a user template; through the chat service, the UI state, and in a real browser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from webui.chat_service import ChatError, ChatOptions, ChatService, request_from_settings
from webui.config import Settings
from webui.prompts import chat as chat_ops
from webui.prompts.history import ChatHistory, HistoryStore
from webui.ui.context import chat_options, default_character_state
from webui.ui.template_panel import AUTO, edited_state, template_choices

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
BOT = "#chat-chatbot [data-testid='bot']"
CONTEXT = "The following is a conversation with an AI Large Language Model."
SETTINGS = {"max_new_tokens": 6, "sampling": {"ban_eos_token": True}}
PIRATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[bot] {% endif %}"


@pytest.fixture
def service(ui_app: Any) -> ChatService:
    ui_app.models.load("tiny-llama.gguf")
    return ChatService(ui_app)


def plan(
    service: ChatService, history: ChatHistory, text: str | None, options: ChatOptions, **kwargs: Any
) -> str:
    probe = request_from_settings(SETTINGS, prompt="")
    return service.plan_reply(history, text, options, probe, **kwargs).prompt.text


# -- Start reply with ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "ending"),
    [
        ("chat", "\nAssistant: Sure thing,"),
        ("chat-instruct", "<|im_start|>assistant\nAssistant: Sure thing,"),
        ("instruct", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nSure thing,"),
    ],
)
def test_start_reply_with_ends_the_prompt_and_begins_the_reply(
    service: ChatService, mode: str, ending: str
) -> None:
    options = ChatOptions(mode=mode, instruction_template="ChatML", start_reply_with="Sure thing,")  # type: ignore[arg-type]
    history = ChatHistory.new("Assistant", "Hello!")
    assert plan(service, history, "Hi there", options).endswith(ending)
    final = list(service.stream_reply(history, "Hi there", options, SETTINGS))[-1]
    assert [t.role for t in final.history.turns] == ["assistant", "user", "assistant"]
    assert final.text.startswith("Sure thing,") and final.history.turns[-1].content == final.text
    saved = service.histories.latest("Assistant")
    assert saved is not None and saved.turns[-1].content.startswith("Sure thing,")
    # Regenerate: the reply is dropped, the new one starts the same way
    again = chat_ops.regenerate(final.history)
    assert plan(service, again, None, options).endswith(ending)
    regenerated = list(service.stream_reply(again, None, options, SETTINGS))[-1]
    assert regenerated.text.startswith("Sure thing,") and len(regenerated.history.turns) == 3


def test_start_reply_with_leaves_continue_and_impersonate_alone(service: ChatService) -> None:
    options = ChatOptions(start_reply_with="Sure thing,")
    history = ChatHistory.new("Assistant", "Hello!").with_turn("user", "Hi").with_turn("assistant", "Well")
    assert plan(service, history, None, options, continue_last=True).endswith("Assistant: Well")
    assert plan(service, history, "I", options, impersonate=True).endswith("\nYou: I")
    assert plan(service, history, "Hi", ChatOptions(start_reply_with="  ")).endswith("You: Hi\nAssistant:")


# -- Custom system message, chat-instruct command, the UI state -------------------------------------------
def test_custom_system_message_and_command_reach_the_prompt_through_the_ui_state(
    service: ChatService,
) -> None:
    state = default_character_state(service.app) | {"mode": "instruct", "instruction_template": "Alpaca"}
    history = ChatHistory.new("Assistant")
    assert plan(service, history, "Hi", chat_options(state)).startswith(CONTEXT)  # the character's context
    french = plan(service, history, "Hi", chat_options(state | {"system_message": "Answer in French."}))
    assert french.startswith("Answer in French.\n\n### Instruction:\nHi") and CONTEXT not in french
    assert plan(service, history, "Hi", chat_options(state | {"system_message": "  "})).startswith(CONTEXT)

    command = "Reply as <|character|> in pirate speak.\n\n<|prompt|>"
    chat_instruct = state | {
        "mode": "chat-instruct",
        "instruction_template": "ChatML",
        "chat_instruct_command": command,
    }
    prompt = plan(service, history, "Hi", chat_options(chat_instruct))
    assert prompt.startswith("<|im_start|>user\nReply as Assistant in pirate speak.\n\n" + CONTEXT)
    default = plan(service, history, "Hi", chat_options(chat_instruct | {"chat_instruct_command": ""}))
    assert 'Write a single reply for the character "Assistant".' in default  # blank: the default command


def test_character_state_holds_and_restores_every_chat_option(ui_app: Any) -> None:
    fresh = default_character_state(ui_app)
    assert fresh["start_reply_with"] == "" and fresh["system_message"] is None
    assert fresh["instruction_template_text"] is None
    assert set(fresh) == set(ChatOptions.__dataclass_fields__) - {"default_persona", "tools", "template_kwargs"}
    chosen = fresh | {
        "start_reply_with": "Arr,",
        "system_message": "Be terse.",
        "instruction_template_text": PIRATE,
        "chat_instruct_command": "Go <|character|>\n<|prompt|>",
    }
    # "Save UI settings" keeps the state whole under `chat` in settings.yaml (the browser test below saves it)
    ui_app.settings.extra["chat"] = yaml.safe_load(yaml.safe_dump({"chat": dict(chosen)}))["chat"]
    assert default_character_state(ui_app) == chosen  # and the next start has them all
    options = chat_options(chosen)
    assert (options.start_reply_with, options.system_message, options.instruction_template_text) == (
        "Arr,",
        "Be terse.",
        PIRATE,
    )


# -- the Instruction template panel's edits --------------------------------------------------------------
def test_edited_template_text_is_used_and_a_broken_one_is_refused(service: ChatService) -> None:
    history = ChatHistory.new("Assistant")
    options = ChatOptions(mode="instruct", instruction_template_text=PIRATE)
    prompt = plan(service, history, "Hi", options)
    assert prompt.startswith("[system] " + CONTEXT) and prompt.endswith("[user] Hi\n[bot] ")
    assert service.template("Alpaca", PIRATE) == ("Alpaca (edited)", PIRATE, "edited")
    with pytest.raises(ChatError, match=r"instruction template: template 'Alpaca \(edited\)', line 1"):
        service.template("Alpaca", "{% for m in messages %}")


def test_panel_keeps_the_last_good_edit_and_lists_user_templates(service: ChatService) -> None:
    app = service.app
    state = default_character_state(app) | {"instruction_template": "ChatML"}
    edited = edited_state(app, PIRATE, "ChatML", state)
    assert edited is not None and edited["instruction_template_text"] == PIRATE
    assert edited_state(app, "{% for m in messages %}", "ChatML", edited) is None  # broken: state stays
    chatml = service.template("ChatML").text
    assert (
        edited_state(app, chatml, "ChatML", edited)["instruction_template_text"] is None
    )  # back to the file
    service.templates.save("Pirate", PIRATE)
    choices = template_choices(app)
    assert choices[0] == AUTO and "Pirate" in choices and "ChatML" in choices


# -- browser --------------------------------------------------------------------------------------------
@pytest.fixture
def ui_settings(ui_settings: Settings) -> Settings:
    """Short replies that never end at once (EOS banned), from a preset in the test's copy."""
    (ui_settings.presets_dir / "UI test.yaml").write_text(
        yaml.safe_dump({"ban_eos_token": True}), encoding="utf-8"
    )
    ui_settings.preset = "UI test"
    ui_settings.extra["generation"] = {"max_new_tokens": 6}
    return ui_settings


@pytest.fixture
def prompts(ui_server: UIServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every prompt the generation core is asked to continue, in order."""
    seen: list[str] = []
    core = ui_server.app.core
    original = core.stream

    def recording(request: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        seen.append(request.prompt)
        return original(request, *args, **kwargs)

    monkeypatch.setattr(core, "stream", recording)
    return seen


def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    """Until the server-side `condition()` holds (a saved chat, a prompt recorded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def send_and_wait(page: Any, server: UIServer, prompts: list[str], text: str) -> str:
    count, bots = len(prompts), page.locator(BOT).count()
    page.fill("#chat-input textarea", text)
    page.click("#chat-generate")
    wait_for(lambda: len(prompts) > count, "no generation started")
    wait_for(lambda: not server.app.core.busy, "the reply did not end")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == {bots + 1}')
    return prompts[-1]


def type_in(page: Any, elem_id: str, text: str) -> None:
    """Type as a person does (one input event per key), so the last keystrokes must reach the state."""
    box = page.locator(f"#{elem_id} textarea")
    box.fill("")
    box.press_sequentially(text)


def pick_mode(page: Any, mode: str) -> None:
    """Click the mode's label (a re-render of the tab may land on the click; callers then wait on state)."""
    page.locator(f"#chat-mode label:has(input[value='{mode}'])").click()


@pytest.mark.browser
def test_chat_options_follow_the_mode_and_reach_the_prompt_and_the_reply(
    page: Any, ui_server: UIServer, prompts: list[str]
) -> None:
    ui_server.app.models.load("tiny-llama.gguf")
    page.reload()
    page.wait_for_selector(BOT)
    page.wait_for_selector("#chat-start-reply-with textarea")
    assert (
        page.locator("#chat-instruct-command").is_hidden()
        and page.locator("#chat-system-message").is_hidden()
    )

    type_in(page, "chat-start-reply-with", "Sure thing,")
    prompt = send_and_wait(page, ui_server, prompts, "Hello there")
    assert prompt.endswith("You: Hello there\nAssistant: Sure thing,")
    # shown (after the speaker's name, where the chat shows names) and saved beginning with it
    page.wait_for_function(f'document.querySelectorAll("{BOT}")[1].innerText.includes("Sure thing,")')
    history = HistoryStore(ui_server.app.settings.user_data_dir).latest("Assistant")
    assert history is not None and history.turns[-1].content.startswith("Sure thing,")

    pick_mode(page, "chat-instruct")
    page.wait_for_selector("#chat-instruct-command textarea")
    page.wait_for_selector("#chat-system-message textarea")
    assert "<|character|>" in page.locator("#chat-instruct-command textarea").input_value()
    type_in(page, "chat-instruct-command", "Reply as <|character|> in pirate speak.\n\n<|prompt|>")
    type_in(page, "chat-system-message", "Stay in character.")
    prompt = send_and_wait(page, ui_server, prompts, "Where to?")
    assert "Reply as Assistant in pirate speak.\n\n" in prompt and "Stay in character." in prompt
    assert prompt.endswith("Assistant: Sure thing,")

    page.click("#chat-regenerate")  # the new reply starts the same way
    wait_for(lambda: len(prompts) == 3, "Regenerate did not generate")
    wait_for(lambda: not ui_server.app.core.busy, "the reply did not end")
    assert prompts[-1] == prompt

    pick_mode(page, "chat")
    page.locator("#chat-instruct-command").wait_for(state="hidden")
    page.locator("#chat-system-message").wait_for(state="hidden")

    page.get_by_role("tab", name="Session", exact=True).click()
    page.locator("#session-save").click()
    page.wait_for_function("document.querySelector('#session-saved')?.textContent.includes('Saved')")
    saved = yaml.safe_load(ui_server.app.settings.settings_file.read_text())["chat"]
    assert saved["start_reply_with"] == "Sure thing," and saved["system_message"] == "Stay in character."
    assert saved["chat_instruct_command"] == "Reply as <|character|> in pirate speak.\n\n<|prompt|>"


def replace_code(page: Any, text: str) -> None:
    """Replace the Jinja box's text as pasting does (one input event)."""
    editor = page.locator("#template-text .cm-content")
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.insert_text(text)


@pytest.mark.browser
def test_template_edits_drive_the_chat_and_save_as_a_user_template(
    page: Any, ui_server: UIServer, prompts: list[str]
) -> None:
    app = ui_server.app
    chatml = (app.settings.templates_dir / "ChatML.jinja").read_text(encoding="utf-8")
    app.models.load("tiny-llama.gguf")
    page.reload()
    page.wait_for_selector(BOT)
    pick_mode(page, "instruct")
    page.wait_for_selector("#chat-system-message textarea")  # shown once the mode is in the state
    page.get_by_role("tab", name="Parameters", exact=True).click()
    page.get_by_role("tab", name="Instruction template", exact=True).click()
    page.wait_for_selector("#template-text .cm-content")

    replace_code(page, PIRATE)
    page.get_by_role("tab", name="Chat", exact=True).click()
    assert send_and_wait(page, ui_server, prompts, "Hi").endswith("[user] Hi\n[bot] ")

    # a broken edit: one toast naming the error when the box is left; the chat keeps the last good template
    page.get_by_role("tab", name="Parameters", exact=True).click()
    replace_code(page, "{% for m in messages %}{{ m['content'] }}")
    page.locator("#template-save-name textarea").click()  # leaves the box
    toast = page.locator(".toast-body")
    toast.first.wait_for()
    assert (
        toast.count() == 1
        and "line" in toast.first.inner_text()
        and "Instruction template" in toast.first.inner_text()
    )
    page.get_by_role("tab", name="Chat", exact=True).click()
    assert send_and_wait(page, ui_server, prompts, "Still there?").endswith("[user] Still there?\n[bot] ")

    # saving under a shipped name is refused; under a new name it goes to user_data/templates
    page.get_by_role("tab", name="Parameters", exact=True).click()
    replace_code(page, PIRATE)
    page.fill("#template-save-name textarea", "ChatML")
    page.click("#template-save")
    page.wait_for_selector(".toast-body >> text=/shipped template/")
    page.fill("#template-save-name textarea", "Pirate")
    page.click("#template-save")
    page.wait_for_selector(".toast-body >> text=/Saved template 'Pirate'/")
    saved = app.settings.user_data_dir / "templates" / "Pirate.jinja"
    assert saved.read_text(encoding="utf-8") == PIRATE
    assert (app.settings.templates_dir / "ChatML.jinja").read_text(encoding="utf-8") == chatml
    page.wait_for_function("document.querySelector('#template-dropdown input')?.value === 'Pirate'")

    # the list is read again on page load: the new template is offered after a reload
    page.reload()
    page.get_by_role("tab", name="Parameters", exact=True).click()
    page.get_by_role("tab", name="Instruction template", exact=True).click()
    page.locator("#template-dropdown input").click()
    page.get_by_role("option", name="Pirate", exact=True).wait_for()
