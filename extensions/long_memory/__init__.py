"""Long-chat memory: when a chat outgrows the context, its oldest turns are summarised by the loaded model.

Two hooks. ``history_modifier`` (before each reply) builds the prompt the default way; if turns would be
dropped, it asks the model, through the generation core, to fold exactly those turns into the running
summary, and stores it with the chat (see `memory`). ``custom_generate_chat_prompt`` then puts the summary
after the character's context and leaves out the turns it covers, so nothing falls between the summary
and the turns still quoted.
"""

from __future__ import annotations

from typing import Any

from webui.errors import HearthError
from webui.extensions import add_context
from webui.generation import GenerationRequest
from webui.plugins import hookimpl
from webui.sampling import SamplingParams

from . import memory as mem

MAX_ROUNDS = 3
INSTRUCTION = (
    "Summarise the conversation below in a few sentences, keeping names, facts, decisions and open "
    "questions. Merge it with the summary so far."
)


@hookimpl
def params() -> dict[str, Any]:
    return {
        "summary_tokens": 120,  # the longest summary the model may write
        "label": "Summary of the earlier conversation:",
        "instruction": INSTRUCTION,
    }


def _with_summary(options: Any, character: Any, memory: mem.Memory, label: str) -> tuple[Any, Any]:
    text = f"{label.strip()}\n{memory.summary.strip()}" if memory.summary.strip() else ""
    return add_context(options, character, text)


@hookimpl
def history_modifier(history: Any, state: dict[str, Any]) -> Any:
    build, options, character = state["build_prompt"], state["options"], state["character"]
    if build is None or options is None or character is None:
        return None
    changed = False
    for _ in range(MAX_ROUNDS):  # a longer summary can push more turns out: fold those in too
        memory = mem.read_memory(history)
        view = mem.uncovered(history, memory)
        try:
            prompt = build(state["user_input"], view, *_with_summary(options, character, memory, state["params"]["label"]))
        except HearthError:
            break  # does not fit even without old turns: the reply itself will say so
        if not prompt.dropped_turns:
            break
        keep = mem.pinned(history)
        first = max(memory.start, keep)
        # The builder dropped the oldest whole exchanges after its pinned turn; cover exactly those.
        last = first + (mem.pinned(view) - keep) + prompt.dropped_turns - 1
        lines = mem.transcript(list(history.turns[first : last + 1]), options.user_name, character.name)
        history, changed = mem.remember(history, last, _summarise(state, memory.summary, lines)), True
    return history if changed else None


def _summarise(state: dict[str, Any], previous: str, lines: str) -> str:
    settings, probe = state["params"], state["request"]
    request = GenerationRequest(
        prompt=mem.summary_prompt(settings["instruction"] or INSTRUCTION, previous, lines),
        max_new_tokens=max(settings["summary_tokens"], 1),
        truncation_length=probe.truncation_length if probe is not None else 0,
        stop=["\n\n"],
        sampling=SamplingParams(do_sample=False),
    )
    text = state["app"].core.generate(request).text.strip()
    return text or mem.fallback_summary(previous, lines)


@hookimpl
def custom_generate_chat_prompt(user_input: str | None, history: Any, options: Any, character: Any,
                                state: dict[str, Any], build: Any) -> Any:
    memory = mem.read_memory(history)
    if not memory.summary:
        return None
    try:
        return build(user_input, mem.uncovered(history, memory),
                     *_with_summary(options, character, memory, state["params"]["label"]))
    except HearthError:
        return None  # the summary does not fit: the prompt is built without it
