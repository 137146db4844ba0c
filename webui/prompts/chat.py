"""Chat prompts in text-generation-webui's three modes, plus the history operations the chat tab calls.

- ``chat``: the character's context and example dialogue, then ``Name: text`` lines, ending ``CharName:``.
- ``chat-instruct``: that transcript wrapped in one instruction ("Continue the chat dialogue below...")
  rendered through the model's instruction template, with the reply already started as ``CharName:``.
- ``instruct``: the turns go straight through the instruction template as chat messages.

Long chats lose their oldest exchanges first; the context and the greeting always stay, and the number of
dropped turns is reported so the UI can say so. Everything here is pure: no model, no files.

A turn's images (`Turn.images`) enter the prompt as `MEDIA_MARKER`, one per image, on their own lines before
the turn's text (as llama-server turns a message's image parts into markers before the template sees it):
inside the message content in instruct mode, inside the turn's ``Name:`` line in the chat modes.
`ChatPrompt.images` lists them in prompt order; a dropped turn's images go with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from webui.errors import HearthError
from webui.media import MEDIA_MARKER, Image
from webui.prompts.characters import Character
from webui.prompts.chat_template import render_chat
from webui.prompts.history import ChatHistory, HistoryError, Turn
from webui.prompts.templates import TemplateError, render

ChatMode = Literal["chat", "chat-instruct", "instruct"]
CHAT_MODES: tuple[str, ...] = ("chat", "chat-instruct", "instruct")
DEFAULT_CHAT_INSTRUCT_COMMAND = (
    'Continue the chat dialogue below. Write a single reply for the character "<|character|>".\n\n<|prompt|>'
)
_PLACEHOLDER = "\x00hearth-{}\x00"
_NAME_MACROS = re.compile(r"\{\{(char|user)\}\}|<(BOT|USER)>", re.IGNORECASE)


class PromptTooLongError(HearthError):
    """Even with every droppable turn gone, the prompt does not fit the context window."""


@dataclass(frozen=True)
class ChatPrompt:
    """What the generation core needs: the prompt, where to stop, and how much history was cut."""

    text: str
    stop_strings: tuple[str, ...]
    dropped_turns: int = 0
    #: Instruct mode: the messages `text` renders (a server applying its own chat template takes these).
    #: None for chat transcripts and for a started reply (continue, impersonate), which messages can't say.
    messages: list[dict[str, Any]] | None = None
    #: The images of the prompt in order: `text` holds `MEDIA_MARKER` once for each, where it goes.
    images: tuple[Image, ...] = ()


def user_name_for(user_name: str | None, character: Character) -> str:
    """The name the user goes by: the one given, else the character card's "your name", else "You"."""
    return (user_name or "").strip() or (character.user_name or "").strip() or "You"


def substitute_names(text: str, user_name: str, bot_name: str) -> str:
    """Replace the card macros ``{{char}}``, ``{{user}}``, ``<BOT>``, ``<USER>`` (any case)."""

    def name_for(match: re.Match[str]) -> str:
        macro = (match.group(1) or match.group(2)).lower()
        return bot_name if macro in ("char", "bot") else user_name

    return _NAME_MACROS.sub(name_for, text)


@dataclass(frozen=True)
class _Request:
    """The fixed parts of one prompt build; only the kept turns vary while truncating."""

    mode: str
    character: Character
    user_name: str
    template_text: str
    template_name: str
    bos_token: str
    eos_token: str
    impersonate: bool
    partial: str  # continued bot text (with its image markers), or the user's started text when impersonating
    continue_last: bool
    command: str
    system_message: str | None
    tools: tuple[dict[str, Any], ...] = ()
    template_kwargs: tuple[tuple[str, Any], ...] = ()

    def sub(self, text: str) -> str:
        return substitute_names(text, self.user_name, self.character.name)

    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool) -> str:
        return render_chat(
            self.template_text,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            tools=list(self.tools) or None,
            template_name=self.template_name,
            **dict(self.template_kwargs),
        )


def build_chat_prompt(
    history: ChatHistory,
    user_input: str | None,
    *,
    mode: ChatMode,
    character: Character,
    user_name: str | None,
    template_text: str,
    count_tokens: Callable[[str], int],
    max_prompt_tokens: int,
    bos_token: str = "",
    eos_token: str = "",
    impersonate: bool = False,
    continue_last: bool = False,
    chat_instruct_command: str = DEFAULT_CHAT_INSTRUCT_COMMAND,
    system_message: str | None = None,
    template_name: str = "instruction template",
    tools: Sequence[dict[str, Any]] = (),
    template_kwargs: dict[str, Any] | None = None,
    images: Sequence[Image] = (),
    image_tokens: Callable[[Image], int] | None = None,
    max_images: int = 0,
) -> ChatPrompt:
    """Build the prompt for the next reply (or, with impersonate, the user's next message).

    ``user_input`` is the new user message; with ``impersonate`` it is text the user has started, which
    the model continues. ``continue_last`` extends the last assistant turn instead of starting a new one.
    ``user_name`` None or empty: the character card's "your name", else "You" (see `user_name_for`).
    ``system_message`` overrides the character context as the instruct system prompt (instruct modes).
    ``max_prompt_tokens`` is truncation_length - max_new_tokens; oldest exchanges drop until it fits.
    ``tools`` (OpenAI function tools) and ``template_kwargs`` (``enable_thinking``, ``reasoning_effort``...)
    reach the template (instruct modes; see `render_chat`). ``images`` are the new user message's;
    ``image_tokens`` says what an image costs in the model's tokens (`Model.image_tokens`), so that fitting
    drops old exchanges by what their images really take (by default an image counts as its marker text);
    ``max_images`` (0: no limit) drops old exchanges until the images kept are within the model's limit.
    """
    if mode not in CHAT_MODES:
        raise ValueError(f"mode must be one of {CHAT_MODES}, got {mode!r}")
    if impersonate and continue_last:
        raise ValueError("impersonate and continue_last cannot be combined")
    if images and (impersonate or continue_last):
        raise ValueError("images belong to a new user message, not to an impersonated or continued one")
    turns = list(history.turns)
    text = user_input if user_input and user_input.strip() else ""  # as given: instruct renders it verbatim
    partial = text.strip() if impersonate else ""
    partial_images: tuple[Image, ...] = ()
    if continue_last:
        if not turns or turns[-1].role != "assistant":
            raise HistoryError("there is no reply to continue")
        continued = turns.pop()
        partial, partial_images = with_markers(continued), continued.images
    tail = [Turn("user", text, images=tuple(images))] if (text or images) and not (impersonate or continue_last) else []
    request = _Request(
        mode,
        character,
        user_name_for(user_name, character),
        template_text,
        template_name,
        bos_token,
        eos_token,
        impersonate,
        partial,
        continue_last,
        chat_instruct_command,
        system_message,
        tuple(tools),
        tuple((template_kwargs or {}).items()),
    )

    pinned = turns[:1] if turns and turns[0].role == "assistant" else []
    groups = _exchanges(turns[len(pinned) :])

    def prompt_for(dropped_groups: int) -> str:
        kept = [t for group in groups[dropped_groups:] for t in group]
        return _build(request, [*pinned, *kept, *tail])

    def pictures(dropped_groups: int) -> tuple[Image, ...]:
        kept = [*pinned, *(t for group in groups[dropped_groups:] for t in group), *tail]
        return (*(image for turn in kept for image in turn.images), *partial_images)

    def cost(dropped_groups: int) -> int:
        """Tokens of the prompt without its oldest `dropped_groups` exchanges, images at their real size."""
        return count_tokens(prompt_for(dropped_groups)) + sum(map(image_tokens or (lambda _: 0), pictures(dropped_groups)))

    def fits(dropped_groups: int) -> bool:
        return (not max_images or len(pictures(dropped_groups)) <= max_images) and cost(dropped_groups) <= max_prompt_tokens

    # Fewer kept turns never makes a prompt longer, so binary search keeps tokenizer calls at O(log n).
    # Without a new message the last exchange is the one being answered (a tool's result, a regenerated
    # reply): it is never dropped.
    low, high = 0, len(groups) - (1 if groups and not tail and not continue_last and not impersonate else 0)
    if cost(high) > max_prompt_tokens:
        raise PromptTooLongError(
            f"the prompt needs {cost(high)} tokens with only the context, greeting and "
            f"current message, over the {max_prompt_tokens} available; shorten the character context or "
            "the message, or raise the truncation length"
        )
    while low < high:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    dropped = sum(len(group) for group in groups[:low])
    plain = mode == "instruct" and not (impersonate or continue_last)
    kept = [*pinned, *(t for group in groups[low:] for t in group), *tail]
    messages = _instruct_messages(request, kept) if plain else None
    kept_images = (*(image for turn in kept for image in turn.images), *partial_images)
    return ChatPrompt(prompt_for(low), _stop_strings(request), dropped, messages, kept_images)


def _exchanges(turns: Sequence[Turn]) -> list[list[Turn]]:
    """Group turns so each group starts at a user turn; dropping whole groups keeps roles alternating."""
    groups: list[list[Turn]] = []
    for turn in turns:
        if turn.role == "user" or not groups:
            groups.append([turn])
        else:
            groups[-1].append(turn)
    return groups


def _build(request: _Request, turns: list[Turn]) -> str:
    if request.mode == "instruct":
        return _instruct_prompt(request, turns)
    transcript = _chat_transcript(request, turns)
    bot, user = request.character.name, request.user_name
    speaker = user if request.impersonate else bot
    if request.mode == "chat":
        return transcript + _started_line(speaker, request.partial)
    command = request.command.replace("<|character|>", speaker).replace("<|prompt|>", transcript)
    messages = _system(request.system_message)
    messages += [
        {"role": "user", "content": request.sub(command)},
        {"role": "assistant", "content": _started_line(speaker, request.partial)},
    ]
    return _render_continuing(request, messages)


def _started_line(speaker: str, partial: str) -> str:
    """``Name:`` (no trailing space: most tokenizers glue the space to the next word) or ``Name: text``."""
    return f"{speaker}: {partial.lstrip()}" if partial.strip() else f"{speaker}:"


def _chat_transcript(request: _Request, turns: list[Turn]) -> str:
    head = [
        request.sub(part).strip() for part in (request.character.context, request.character.example_dialogue)
    ]
    text = "".join(part + "\n\n" for part in head if part)
    for turn in turns:
        name = request.user_name if turn.role == "user" else request.character.name
        text += f"{name}: {with_markers(turn).strip()}\n"
    return text


def with_markers(turn: Turn) -> str:
    """The turn's text with one `MEDIA_MARKER` line per image before it (its content when it has none)."""
    if not turn.images:
        return turn.content
    return "\n".join([MEDIA_MARKER] * len(turn.images) + ([turn.content] if turn.content else []))


def _system(content: str | None) -> list[dict[str, Any]]:
    return [{"role": "system", "content": content}] if content and content.strip() else []


def _instruct_messages(request: _Request, turns: list[Turn]) -> list[dict[str, Any]]:
    system = request.system_message if request.system_message is not None else request.sub(request.character.context)
    return _system(system) + [turn_message(t) for t in turns]


def _instruct_prompt(request: _Request, turns: list[Turn]) -> str:
    messages = _instruct_messages(request, turns)
    if request.continue_last:
        return _render_continuing(request, [*messages, {"role": "assistant", "content": request.partial}])
    if request.impersonate:
        marker = _PLACEHOLDER.format("impersonate")
        rendered = request.render([*messages, {"role": "user", "content": marker}], False)
        return rendered[: rendered.rindex(marker)] + request.partial
    return request.render(messages, True)


#: Turn metadata that templates read as message fields (tool calling, and the reasoning of a reply).
MESSAGE_FIELDS = ("tool_calls", "tool_call_id", "name", "reasoning_content")


def turn_message(turn: Turn) -> dict[str, Any]:
    """A turn as a chat-template message: role and content, plus the tool-calling fields and the reply's
    reasoning (``reasoning_content``, which templates that keep earlier reasoning render) where it has them."""
    message: dict[str, Any] = {"role": turn.role, "content": with_markers(turn)}
    for key in MESSAGE_FIELDS:
        if turn.metadata.get(key) is not None:
            message[key] = turn.metadata[key]
    if "reasoning_content" not in message and turn.metadata.get("reasoning"):
        message["reasoning_content"] = turn.metadata["reasoning"]
    return message


def _render_continuing(request: _Request, messages: list[dict[str, Any]]) -> str:
    """Render with the final assistant message left open, as transformers' continue_final_message does."""
    final = messages[-1]["content"]
    rendered = request.render(messages, False)
    location = rendered.rfind(final.strip()) if final.strip() else -1
    if location < 0:  # the template rewrote or dropped the message: start a fresh turn and append it
        return request.render(messages[:-1], True) + final
    if rendered[location : location + len(final.lstrip())] == final.lstrip():
        return rendered[: location + len(final.lstrip())]
    return rendered[: location + len(final.strip())]


def _stop_strings(request: _Request) -> tuple[str, ...]:
    stops: list[str] = []
    if request.mode in ("chat", "chat-instruct"):
        stops += [f"\n{request.user_name}:", f"\n{request.character.name}:"]
    if request.mode in ("instruct", "chat-instruct"):
        writer_is_user = request.impersonate and request.mode == "instruct"
        stops += instruct_stop_strings(
            request.template_text, request.bos_token, request.eos_token, user_turn=writer_is_user
        )
    return tuple(dict.fromkeys(stops))


def instruct_stop_strings(
    template_text: str, bos_token: str = "", eos_token: str = "", user_turn: bool = False
) -> list[str]:
    """Text that ends the turn being written under an instruction template.

    Found by rendering placeholder turns: the end-of-turn marker (``<|im_end|>``, ``<|eot_id|>``...) and
    the marker that opens the other party's turn (``### Instruction:``), which models that were never
    taught the special end token tend to write out.
    """
    u1, a1, u2 = (_PLACEHOLDER.format(n) for n in ("u1", "a1", "u2"))
    conversation = [
        {"role": "user", "content": u1},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": u2},
    ]
    try:
        one_exchange = render(template_text, conversation[:2], False, bos_token, eos_token)
        closed = render(template_text, conversation, False, bos_token, eos_token)
        opened = render(template_text, conversation, True, bos_token, eos_token)
    except TemplateError:
        return []
    if user_turn:
        candidates = [closed.split(u2, 1)[-1], opened.split(u2, 1)[-1]]
    else:
        candidates = [one_exchange.split(a1, 1)[-1], closed.split(a1, 1)[-1].split(u2, 1)[0]]
    stops: list[str] = []
    for candidate in (c.strip() for c in candidates):
        if candidate and "\x00" not in candidate and not any(s in candidate for s in stops):
            stops.append(candidate)
    return stops


# History operations: pure functions the chat tab buttons call.


def regenerate(history: ChatHistory) -> ChatHistory:
    """Drop the last reply so it can be generated again with ``build_chat_prompt(result, None, ...)``."""
    if (
        not history.turns
        or history.turns[-1].role != "assistant"
        or history.turns[-1].metadata.get("greeting")
    ):
        raise HistoryError("there is no reply to regenerate")
    return history.with_turns(history.turns[:-1])


def remove_last(history: ChatHistory) -> tuple[ChatHistory, str]:
    """Remove the last exchange; returns the user text so the UI can put it back in the input box."""
    turns = list(history.turns)
    if turns and turns[-1].role == "assistant" and not turns[-1].metadata.get("greeting"):
        turns.pop()
    if turns and turns[-1].role == "user":
        text = turns.pop().content
        return history.with_turns(tuple(turns)), text
    return history.with_turns(tuple(turns)), ""


def send_dummy_message(history: ChatHistory, text: str) -> ChatHistory:
    """Add a user message without generating a reply (to steer a chat by hand)."""
    return history.with_turn("user", text)


def send_dummy_reply(history: ChatHistory, text: str) -> ChatHistory:
    """Add a reply written by hand, as if the character had said it."""
    return history.with_turn("assistant", text)


# Editing any message: the chat tab's selected-message tools. Indexes are turn indexes (0-based).

#: Added to a branched chat's title, so the past-chats list tells it from the chat it came from.
BRANCH_MARK = " (branch)"


def turn_at(history: ChatHistory, index: int) -> Turn:
    """Message `index`, or a HistoryError saying it is gone (the chat changed since it was selected)."""
    if not 0 <= index < len(history.turns):
        raise HistoryError("that message is no longer in the chat: select it again")
    return history.turns[index]


def _replaced(history: ChatHistory, index: int, turn: Turn) -> ChatHistory:
    return history.with_turns((*history.turns[:index], turn, *history.turns[index + 1 :]))


def is_greeting(history: ChatHistory, index: int) -> bool:
    """The character's first turn (flagged or not: a continued greeting loses its flag), which stays."""
    return index == 0 and bool(history.turns) and history.turns[0].role == "assistant"


def edit_turn(history: ChatHistory, index: int, text: str) -> ChatHistory:
    """Message `index` with new text (a reply's shown version is the one edited; its reasoning stays)."""
    if not text.strip():
        raise HistoryError("a message cannot be empty: type its new text, or delete the message")
    return _replaced(history, index, turn_at(history, index).edited(text))


def delete_turn(history: ChatHistory, index: int) -> ChatHistory:
    """The chat without message `index` (all its versions); the greeting stays, as with `remove_last`."""
    turn_at(history, index)
    if is_greeting(history, index):
        raise HistoryError("the greeting stays: edit it instead")
    return history.with_turns((*history.turns[:index], *history.turns[index + 1 :]))


def show_version(history: ChatHistory, index: int, version: int) -> ChatHistory:
    """Reply `index` showing its version `version` (0-based): what later prompts read."""
    return _replaced(history, index, turn_at(history, index).at_version(version))


def branch(history: ChatHistory, index: int) -> ChatHistory:
    """A new chat (its own id) holding this one's turns up to and including message `index`."""
    turn_at(history, index)
    fresh = ChatHistory.new(history.character)
    title = history.display_title()
    title = title if title.endswith(BRANCH_MARK) else f"{title}{BRANCH_MARK}"
    return replace(fresh, turns=history.turns[: index + 1], title=title)
