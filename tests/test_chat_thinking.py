"""A thinking model's reply in the chat (issue 16), without a browser: the chat service streams the
reasoning apart from the answer, closes the block at the thinking budget, saves the reasoning with the
turn and gives it back to templates that keep it; thinking turned off closes the block in the prompt; the
Chat tab shows the reasoning as a "Thinking" block above the answer, pending while it is written, and its
options panel turns the controls' values into `ChatOptions`.

Over tiny-llama.gguf (random weights, EOS banned) with DeepSeek-R1's own template saved as a user template:
with thinking on its generation prompt ends with ``<think>\\n``, so the reply starts inside the block, and a
random model never closes it by itself."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from webui.chat_service import ChatOptions, ChatService, ChatUpdate, request_from_settings
from webui.prompts.history import ChatHistory
from webui.ui.chat_options_panel import budget_tokens, set_budget, set_thinking, thinking_choice
from webui.ui.chat_view import THINKING, TYPING, chat_messages, reply_messages
from webui.ui.context import chat_options, default_character_state

pytest_plugins = ["tests.ui_harness"]
TEMPLATES = Path(__file__).resolve().parent / "data" / "chat_templates"
R1 = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"
SEED = "ByteDance-Seed-OSS"  # a template that renders earlier replies' reasoning_content
SETTINGS = {"max_new_tokens": 24, "sampling": {"ban_eos_token": True}}
MARKERS = ("<think>", "</think>")


@pytest.fixture
def service(ui_app: Any) -> ChatService:
    ui_app.models.load("tiny-llama.gguf")
    service = ChatService(ui_app)
    for name in (R1, SEED):
        service.templates.save(name, (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8"))
    return service


@pytest.fixture
def requests(service: ChatService, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every request the generation core is asked to run, in order."""
    seen: list[Any] = []
    original = service.app.core.stream

    def recording(request: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        seen.append(request)
        return original(request, *args, **kwargs)

    monkeypatch.setattr(service.app.core, "stream", recording)
    return seen


def options(**fields: Any) -> ChatOptions:
    return ChatOptions(mode="instruct", instruction_template=R1, **fields)


def reply(service: ChatService, history: ChatHistory, text: str, opts: ChatOptions) -> list[ChatUpdate]:
    return list(service.stream_reply(history, text, opts, SETTINGS))


def next_prompt(service: ChatService, history: ChatHistory, opts: ChatOptions) -> str:
    probe = request_from_settings(SETTINGS, prompt="")
    return service.plan_reply(history, "And then?", opts, probe).prompt.text


def test_budget_closes_the_block_and_the_reasoning_is_kept_apart_and_saved(
    service: ChatService, requests: list[Any]
) -> None:
    updates = reply(
        service, ChatHistory.new("Assistant"), "Hi", options(enable_thinking=True, thinking_budget=4)
    )
    request, final = requests[-1], updates[-1]
    assert request.prompt.endswith("<｜User｜>Hi<｜Assistant｜><think>\n")  # the reply starts in the block
    assert request.thinking_budget.tokens == 4 and request.thinking_budget.end == "</think>"
    # closed after 4 tokens, so the answer has the rest of the 24
    assert final.done and final.reasoning.strip() and final.text.strip()
    assert not any(m in final.text or m in final.reasoning for m in MARKERS)
    turn = final.history.turns[-1]
    assert (turn.role, turn.content, turn.metadata["reasoning"]) == ("assistant", final.text, final.reasoning)
    saved = service.histories.latest("Assistant")
    assert saved is not None and saved.turns[-1].metadata["reasoning"] == final.reasoning
    # streamed: the reasoning grows while the block is open, then the answer starts and it stays as it was
    thinking = [u for u in updates if u.thinking]
    assert thinking and all(u.text == "" and final.reasoning.startswith(u.reasoning) for u in thinking)
    assert all(u.reasoning == final.reasoning for u in updates if u.text)

    # without a budget the random model never closes the block: all 24 tokens are reasoning
    unlimited = reply(service, ChatHistory.new("Assistant"), "Hi", options(enable_thinking=True))[-1]
    assert requests[-1].thinking_budget is None
    assert (
        unlimited.reasoning.strip()
        and unlimited.text == ""
        and len(unlimited.reasoning) > len(final.reasoning)
    )


def test_next_prompt_gives_the_reasoning_to_templates_that_keep_it(service: ChatService) -> None:
    final = reply(
        service, ChatHistory.new("Assistant"), "Hi", options(enable_thinking=True, thinking_budget=4)
    )[-1]
    reasoning, answer = final.reasoning, final.text
    dropped = next_prompt(service, final.history, options(enable_thinking=True))
    assert answer in dropped and reasoning not in dropped  # DeepSeek-R1 drops earlier reasoning itself
    kept = next_prompt(service, final.history, ChatOptions(mode="instruct", instruction_template=SEED))
    assert f"<seed:think>{reasoning}</seed:think>" in kept and answer in kept
    # saved and loaded again, the turn still carries it
    loaded = service.histories.load("Assistant", final.history.chat_id)
    assert reasoning in next_prompt(service, loaded, ChatOptions(mode="instruct", instruction_template=SEED))


def test_thinking_off_closes_the_block_in_the_prompt(service: ChatService, requests: list[Any]) -> None:
    final = reply(
        service, ChatHistory.new("Assistant"), "Hi", options(enable_thinking=False, thinking_budget=4)
    )[-1]
    assert requests[-1].prompt.endswith("<｜Assistant｜><think>\n</think>")  # the template's own switch
    assert (
        final.reasoning == "" and final.text.strip() and "reasoning" not in final.history.turns[-1].metadata
    )
    assert all(m["role"] != "assistant" or "metadata" not in m for m in chat_messages(final.history))

    # a template without a switch gets the closed block put after its generation prompt
    no_switch = (
        (TEMPLATES / f"{R1}.jinja")
        .read_text(encoding="utf-8")
        .replace("{% if not enable_thinking %}{{- '</think>' -}}{% endif %}", "")
    )
    service.templates.save("R1 always thinks", no_switch)
    always = ChatOptions(mode="instruct", instruction_template="R1 always thinks")
    probe = request_from_settings(SETTINGS, prompt="")
    assert service.plan_reply(ChatHistory.new("Assistant"), "Hi", always, probe).prompt.text.endswith(
        "<｜Assistant｜><think>\n"
    )
    reply(service, ChatHistory.new("Assistant"), "Hi", replace(always, enable_thinking=False))
    assert requests[-1].prompt.endswith("<｜Assistant｜><think>\n</think>\n\n")


def test_a_constrained_reply_is_the_answer_not_reasoning(service: ChatService, requests: list[Any]) -> None:
    """A JSON schema set in the Parameters tab holds from the first token: thinking is closed up front, so
    the JSON is the answer (not hidden in a Thinking block)."""
    settings = {"max_new_tokens": 60, "sampling": {"json_schema": {"type": "object", "properties": {
        "ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}}}
    final = list(service.stream_reply(ChatHistory.new("Assistant"), "Hi", options(enable_thinking=True), settings))[-1]
    assert requests[-1].prompt.endswith("<think>\n</think>") and final.reasoning == ""
    assert final.finish_reason == "stop" and final.text.replace(" ", "") in ('{"ok":true}', '{"ok":false}')


def test_chat_shows_a_thinking_block_above_the_answer(service: ChatService) -> None:
    updates = reply(
        service, ChatHistory.new("Assistant"), "Hi", options(enable_thinking=True, thinking_budget=4)
    )
    speakers = ("You", "Assistant")
    final = updates[-1]
    shown = chat_messages(final.history, speakers)
    assert shown[-2] == {
        "role": "assistant",
        "content": shown[-2]["content"],
        "metadata": {"title": THINKING, "status": "done"},  # Gradio draws it collapsed
    }
    assert shown[-1] == {"role": "assistant", "content": shown[-1]["content"]}  # the answer, below
    assert shown[-1]["content"].startswith("**Assistant**\n\n") and [m["role"] for m in shown] == [
        "user",
        "assistant",
        "assistant",
    ]
    # live: the block is pending (open, with a spinner) and alone while the model thinks
    thinking = next(u for u in updates if u.thinking)
    live = reply_messages(thinking, speakers, typing=True)
    assert live[-1]["metadata"] == {"title": THINKING, "status": "pending"} and live[-2]["role"] == "user"
    answering = next(u for u in updates if u.text.strip() and not u.done)
    live = reply_messages(answering, speakers, typing=True)
    assert live[-2]["metadata"]["status"] == "done" and "metadata" not in live[-1]
    # before any text: the typing bubble; after a closed block, before the answer: the bubble below it
    first = ChatUpdate(final.history.with_turns(final.history.turns[:-1]).with_turn("assistant", ""), "")
    assert reply_messages(first, speakers, typing=True)[-1]["content"].endswith(TYPING)
    closed = ChatUpdate(
        first.history.with_turns(first.history.turns[:-1]).with_turn("assistant", "", reasoning="hmm"),
        "",
        reasoning="hmm",
    )
    assert [
        m.get("metadata", {}).get("status") for m in reply_messages(closed, speakers, typing=True)[-2:]
    ] == [
        "done",
        None,
    ]
    # a reply cut off while thinking is the block alone; the user's turns never get one
    cut = (
        ChatHistory.new("Assistant")
        .with_turn("user", "Hi", reasoning="x")
        .with_turn("assistant", "", reasoning="r")
    )
    assert [m.get("metadata") for m in chat_messages(cut)] == [None, {"title": THINKING, "status": "done"}]


def test_options_panel_values_become_chat_options(ui_app: Any) -> None:
    state = default_character_state(ui_app)
    assert thinking_choice(state.get("enable_thinking")) == "On"  # unset: on, as llama-server
    on = set_thinking("On", state)
    assert on["enable_thinking"] is True and thinking_choice(True) == "On" and thinking_choice(False) == "Off"
    assert set_thinking("Off", on)["enable_thinking"] is False and thinking_choice(None) == "On"
    budget = set_budget(4, on)
    assert chat_options(budget) == ChatOptions(enable_thinking=True, thinking_budget=4)
    assert chat_options(set_thinking("Off", budget)).enable_thinking is False
    assert [budget_tokens(v) for v in (0, 4, 4.0, -1, 2.5, None, float("nan"), True)] == [
        0,
        4,
        4,
        None,
        None,
        None,
        None,
        None,
    ]
    assert set_budget(-3, budget) == gr.skip()  # a bad budget leaves the state as it was
