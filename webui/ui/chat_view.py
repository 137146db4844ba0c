"""How the Chat tab shows a chat: message dicts for ``gr.Chatbot`` with the speakers' names (cai-chat style:
each message opens with its speaker, the character's picture is the chatbot's avatar), the typing bubble,
and the short notices around the input box. Plain functions of plain values; no Gradio calls.

A reply of a thinking model (its reasoning kept apart in ``metadata["reasoning"]`` by the chat service)
shows as two messages: a "Thinking" thought above the answer (Gradio draws a message with
``metadata["title"]`` as a collapsible block: open with a spinner while ``status`` is "pending", closed once
"done"), then the answer, so the copy button, Copy last reply and the token count work on the answer.

A user message's images show under its text as thumbnails (file parts of the message: Gradio draws an
image file as an ``<img>``); `webui.ui.chat_images` writes the files the browser is served. An image a
saved chat could not load back is a line saying so in its message."""

from __future__ import annotations

from typing import Any

from webui.chat_service import ChatUpdate
from webui.media import Image
from webui.prompts.history import ChatHistory, Turn
from webui.prompts.history_media import MEDIA_NOTES
from webui.ui.chat_images import thumbnail_file
from webui.ui.chat_session import TokenCount
from webui.ui.markup import literal_markdown, literal_text

#: The reply bubble shown from the moment a message is sent until the first text of the reply arrives.
TYPING = "…"
NO_MODEL = (
    "⚠️ **No model is loaded.** Load one in the **Model** tab to chat; until then Generate cannot reply."
)


#: The title of the block a reply's reasoning is shown in.
THINKING = "Thinking"


def chat_messages(
    history: ChatHistory | None,
    speakers: tuple[str, str] | None = None,
    typing: bool = False,
    thinking: bool = False,
) -> list[dict[str, Any]]:
    """The chatbot's value: a message dict per turn (two for a reply with reasoning), model text shown
    literally (see `literal_markdown`).

    `speakers` (user name, character name) opens each message with its speaker's name; `typing` adds the
    typing bubble after the last turn; `thinking`: the last turn is a reply still in its reasoning block
    (its Thinking block is pending). A turn an extension rewrote for the model is shown as the person typed
    it (``metadata["visible"]``)."""
    if history is None:
        return []
    last = len(history.turns) - 1
    messages = [
        m for i, t in enumerate(history.turns) for m in turn_messages(t, speakers, thinking and i == last)
    ]
    if typing:
        messages.append(message("assistant", TYPING, speakers))
    return messages


def turn_messages(
    turn: Turn, speakers: tuple[str, str] | None = None, pending: bool = False
) -> list[dict[str, Any]]:
    """One turn's messages: a reply's Thinking block (`pending`: still being written) above its answer; a
    reply that has only reasoning so far (or was cut off in it) is the block alone."""
    text = str(turn.metadata.get("visible") or turn.content)
    notes = turn.metadata.get(MEDIA_NOTES)
    if isinstance(notes, list) and notes:
        text = "\n\n".join([text, *(f"⚠️ {note}" for note in notes)]).strip()
    reasoning = str(turn.metadata.get("reasoning") or "") if turn.role == "assistant" else ""
    mark = version_mark(turn)
    shown = message(turn.role, text, speakers, mark, turn.images)
    if not reasoning:
        return [shown]
    return [thought(reasoning, pending), *([shown] if text.strip() or turn.images else [])]


def version_mark(turn: Turn) -> str:
    """``‹ 2/3 ›`` on a reply with several versions (the one shown, of how many); else ""."""
    count = turn.version_count
    return f"‹ {turn.version_index + 1}/{count} ›" if count > 1 else ""


def message_turn(history: ChatHistory | None, message_index: int) -> int | None:
    """The turn a chatbot message (by its index in `chat_messages`) shows: a reply with reasoning is two
    messages of one turn. None for the typing bubble or an index past the end."""
    if history is None or message_index < 0:
        return None
    seen = 0
    for index, turn in enumerate(history.turns):
        seen += len(turn_messages(turn))
        if message_index < seen:
            return index
    return None


def thought(reasoning: str, pending: bool = False) -> dict[str, Any]:
    """A Thinking block: collapsed when done, open with a spinner while `pending`."""
    status = "pending" if pending else "done"
    return {
        "role": "assistant",
        "content": literal_markdown(reasoning),
        "metadata": {"title": THINKING, "status": status},
    }


def reply_messages(
    update: ChatUpdate, speakers: tuple[str, str] | None, typing: bool
) -> list[dict[str, Any]]:
    """The chat while a reply streams (`update.history` ends with the partial reply): its Thinking block
    fills first, then the answer below; `typing`: a new reply shows the typing bubble until its first
    text (answer or reasoning), and again between a closed block and the answer."""
    messages = chat_messages(update.history, speakers, thinking=update.thinking)
    if typing and not update.text.strip():
        if not update.reasoning:
            messages[-1] = message("assistant", TYPING, speakers)
        elif not update.thinking:
            messages.append(message("assistant", TYPING, speakers))
    return messages


def message(
    role: str,
    text: str,
    speakers: tuple[str, str] | None = None,
    mark: str = "",
    images: tuple[Image, ...] = (),
) -> dict[str, Any]:
    """A chatbot message: the speaker's name (and a reply's version `mark`) above the text, then its
    `images` (the content is a list of parts then, else the text alone)."""
    body = literal_markdown(text)
    if speakers is not None:
        name = speakers[0] if role == "user" else speakers[1]
        header = f"**{literal_text(name)}**" + (f" · {mark}" if mark else "")
        body = f"{header}\n\n{body}"
    elif mark:
        body = f"{mark}\n\n{body}"
    if not images:
        return {"role": role, "content": body}
    parts = [image_part(image, index) for index, image in enumerate(images, 1)]
    return {"role": role, "content": [body, *parts] if body.strip() else parts}


def image_part(image: Image, number: int) -> dict[str, Any]:
    """An image of a message as a chatbot file part (its thumbnail; Gradio reads the type from the name)."""
    return {"path": thumbnail_file(image), "alt_text": f"image {number} ({image.width} x {image.height})"}


def dropped_notice(dropped_turns: int) -> str:
    if not dropped_turns:
        return ""
    turns = "turn was" if dropped_turns == 1 else "turns were"
    return f"ℹ️ The {dropped_turns} oldest {turns} left out of the prompt to fit the context."


def token_label(count: TokenCount | None) -> str:
    """The line under the input box: the typed message's tokens and the whole prompt's against the context."""
    if count is None:
        return "Tokens: no model loaded"
    message = f"Message: {count.message} tokens"
    if count.prompt is None:
        return f"{message} · ⚠️ {count.problem}"
    label = f"{message} · Chat prompt: {count.prompt} / {count.context} tokens"
    if count.dropped_turns:
        label += f" ({count.dropped_turns} oldest turns left out)"
    return label
