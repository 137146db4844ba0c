"""Chat prompts in chat / chat-instruct / instruct modes, impersonate, continue, truncation, history ops."""

from __future__ import annotations

from pathlib import Path

import pytest

from webui.prompts.characters import Character
from webui.prompts.chat import (
    ChatPrompt,
    PromptTooLongError,
    build_chat_prompt,
    instruct_stop_strings,
    regenerate,
    remove_last,
    send_dummy_message,
    send_dummy_reply,
    substitute_names,
    user_name_for,
)
from webui.prompts.history import ChatHistory, HistoryError, Turn
from webui.prompts.templates import load_template

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
CHATML = load_template(TEMPLATES, "ChatML")
LLAMA3 = load_template(TEMPLATES, "Llama-v3")
ARIA = Character(
    "Aria",
    context="{{char}} is a pirate who talks to {{user}}.",
    greeting="Ahoy!",
    example_dialogue="{{user}}: Who are you?\n{{char}}: Captain Aria.",
)
CONTEXT = "Aria is a pirate who talks to Bob.\n\nBob: Who are you?\nAria: Captain Aria.\n\n"


def chat() -> ChatHistory:
    return (
        ChatHistory.new("Aria", ARIA.greeting).with_turn("user", "Hi").with_turn("assistant", "Arr, hello.")
    )


def words(text: str) -> int:
    return len(text.split())


def build(history: ChatHistory, user_input: str | None, mode: str = "chat", **kwargs: object) -> ChatPrompt:
    options: dict = {
        "mode": mode,
        "character": ARIA,
        "user_name": "Bob",
        "template_text": CHATML,
        "count_tokens": words,
        "max_prompt_tokens": 10_000,
    }
    options.update(kwargs)
    return build_chat_prompt(history, user_input, **options)


def test_chat_mode() -> None:
    prompt = build(chat(), "Where to?")
    assert prompt.text == CONTEXT + "Aria: Ahoy!\nBob: Hi\nAria: Arr, hello.\nBob: Where to?\nAria:"
    assert prompt.stop_strings == ("\nBob:", "\nAria:")
    assert prompt.dropped_turns == 0


def test_chat_mode_impersonate_and_continue() -> None:
    impersonated = build(chat(), None, impersonate=True)
    assert impersonated.text == CONTEXT + "Aria: Ahoy!\nBob: Hi\nAria: Arr, hello.\nBob:"
    started = build(chat(), "I think", impersonate=True)
    assert started.text.endswith("Aria: Arr, hello.\nBob: I think")
    continued = build(chat(), None, continue_last=True)
    assert continued.text == CONTEXT + "Aria: Ahoy!\nBob: Hi\nAria: Arr, hello."


def test_chat_instruct_mode() -> None:
    prompt = build(chat(), "Where to?", mode="chat-instruct")
    assert prompt.text == (
        "<|im_start|>user\n"
        'Continue the chat dialogue below. Write a single reply for the character "Aria".\n\n'
        + CONTEXT
        + "Aria: Ahoy!\nBob: Hi\nAria: Arr, hello.\nBob: Where to?\n<|im_end|>\n<|im_start|>assistant\nAria:"
    )
    assert prompt.stop_strings == ("\nBob:", "\nAria:", "<|im_end|>")


def test_chat_instruct_custom_command_impersonate_and_continue() -> None:
    command = "Write the next line for <|character|>.\n<|prompt|>"
    impersonated = build(
        chat(),
        None,
        mode="chat-instruct",
        impersonate=True,
        chat_instruct_command=command,
        system_message="Stay in character.",
    )
    assert impersonated.text == (
        "<|im_start|>system\nStay in character.<|im_end|>\n<|im_start|>user\nWrite the next line for Bob.\n"
        + CONTEXT
        + "Aria: Ahoy!\nBob: Hi\nAria: Arr, hello.\n<|im_end|>\n<|im_start|>assistant\nBob:"
    )
    continued = build(chat(), None, mode="chat-instruct", continue_last=True)
    assert continued.text.endswith(
        "Aria: Ahoy!\nBob: Hi\n<|im_end|>\n<|im_start|>assistant\nAria: Arr, hello."
    )


def test_instruct_mode_uses_context_as_system() -> None:
    prompt = build(chat(), "Where to?", mode="instruct", template_text=LLAMA3, bos_token="<|begin_of_text|>")
    assert prompt.text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nAria is a pirate who talks to Bob.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nAhoy!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nArr, hello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhere to?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert prompt.stop_strings == ("<|eot_id|>",)


def test_instruct_mode_without_context_keeps_template_default() -> None:
    plain = Character("Assistant")
    history = ChatHistory.new("Assistant").with_turn("user", "Hi").with_turn("assistant", "Hello.")
    prompt = build(
        history,
        "Add 2+2.",
        mode="instruct",
        character=plain,
        template_text=load_template(TEMPLATES, "Alpaca"),
    )
    assert prompt.text == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nHi\n\n### Response:\nHello.\n\n### Instruction:\nAdd 2+2.\n\n### Response:\n"
    )
    assert prompt.stop_strings == ("### Instruction:",)
    override = build(history, "x", mode="instruct", template_text=CHATML, system_message="Answer in French.")
    assert override.text.startswith("<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nHi")


def test_instruct_impersonate_and_continue() -> None:
    impersonated = build(chat(), "Well", mode="instruct", impersonate=True)
    assert impersonated.text.endswith("<|im_start|>assistant\nArr, hello.<|im_end|>\n<|im_start|>user\nWell")
    assert impersonated.stop_strings == ("<|im_end|>",)
    continued = build(chat(), None, mode="instruct", continue_last=True)
    assert continued.text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nArr, hello.")
    # Llama-v3 trims content: the trailing space of the partial reply is dropped, the reply stays open.
    spaced = chat().with_turns((*chat().turns[:-1], Turn("assistant", "Arr, ")))
    assert build(spaced, None, mode="instruct", template_text=LLAMA3, continue_last=True).text.endswith(
        "<|start_header_id|>assistant<|end_header_id|>\n\nArr,"
    )
    with pytest.raises(HistoryError, match="no reply to continue"):
        build(chat().with_turn("user", "?"), None, continue_last=True)


def test_truncation_drops_oldest_exchanges_and_keeps_context_and_greeting() -> None:
    history = ChatHistory.new("Aria", ARIA.greeting)
    for n in range(10):
        history = history.with_turn("user", f"question{n} " * 5).with_turn("assistant", f"answer{n} " * 5)
    full = build(history, "Last one?")
    budget = words(full.text) - 24  # each exchange is 12 words: exactly two must go
    prompt = build(history, "Last one?", max_prompt_tokens=budget)
    assert words(prompt.text) <= budget
    assert prompt.text.startswith(CONTEXT + "Aria: Ahoy!\nBob: question")
    assert "question0" not in prompt.text and "answer0" not in prompt.text
    assert "answer9" in prompt.text and prompt.text.endswith("Bob: Last one?\nAria:")
    assert prompt.dropped_turns == 4  # two whole exchanges, oldest first
    # Minimal: keeping one more exchange would not fit.
    assert "question2" in prompt.text and "question1" not in prompt.text

    instruct = build(history, "Last one?", mode="instruct", max_prompt_tokens=budget)
    assert instruct.dropped_turns % 2 == 0 and instruct.dropped_turns > 0
    assert "Ahoy!" in instruct.text and "Last one?" in instruct.text


def test_prompt_too_long_even_after_dropping_everything() -> None:
    with pytest.raises(PromptTooLongError, match="over the 5 available"):
        build(chat(), "Where to?", max_prompt_tokens=5)


def test_instruct_stop_strings_per_family() -> None:
    assert instruct_stop_strings(load_template(TEMPLATES, "Llama-v2"), "<s>", "</s>") == ["</s>"]
    assert instruct_stop_strings(load_template(TEMPLATES, "Alpaca"), user_turn=True) == ["### Response:"]
    assert instruct_stop_strings("{{ raise_exception('strict') }}") == []


def test_substitute_names() -> None:
    assert (
        substitute_names("{{Char}} meets {{USER}}; <BOT> and <USER>.", "Bob", "Aria")
        == "Aria meets Bob; Aria and Bob."
    )


def test_history_operations() -> None:
    history = chat()
    regenerated = regenerate(history)
    assert regenerated.turns[-1] == Turn("user", "Hi")
    assert build(regenerated, None).text.endswith("Bob: Hi\nAria:")
    with pytest.raises(HistoryError):
        regenerate(ChatHistory.new("Aria", "Ahoy!"))

    removed, text = remove_last(history)
    assert text == "Hi" and [t.content for t in removed.turns] == ["Ahoy!"]
    assert remove_last(removed) == (removed, "")

    dummy = send_dummy_reply(send_dummy_message(history, "Steer"), "Aye")
    assert [(t.role, t.content) for t in dummy.turns[-2:]] == [("user", "Steer"), ("assistant", "Aye")]
    assert history.turns[-1].content == "Arr, hello."  # operations never mutate their input


def test_the_cards_user_name_is_used_unless_one_is_given() -> None:
    peter = Character("Aria", context="{{char}} meets {{user}}.", greeting="Ahoy, {{user}}!", user_name="Peter")
    history = ChatHistory.new("Aria").with_turn("user", "Hi")
    prompt = build(history, "Who am I?", character=peter, user_name=None)
    assert prompt.text.startswith("Aria meets Peter.") and "Peter: Who am I?\nAria:" in prompt.text
    assert "\nPeter:" in prompt.stop_strings
    assert "Bob: Who am I?" in build(history, "Who am I?", character=peter, user_name="Bob").text
    assert user_name_for(None, peter) == "Peter" and user_name_for(" ", ARIA) == "You"
