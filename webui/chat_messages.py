"""OpenAI-style chat messages as a chat history: the API's chat completions (and anything else that speaks
in messages) become the turns the chat service plans a reply for.

Content may be a string or OpenAI content parts: ``text`` parts are joined; ``image_url`` parts
(``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``, or the URL as a plain
string, as some clients send it) become the turn's images; other kinds are ignored. Images belong to user
messages, and to assistant messages too (SillyTavern sends a character's pictures back on its replies);
an image in a system, developer or tool message is refused, not dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from webui.errors import HearthError
from webui.media import Image, MediaError
from webui.prompts.history import IMAGE_ROLES, ChatHistory


class ChatError(HearthError):
    """A chat request that cannot be served (bad messages, unknown character or template)."""


#: Message fields kept with a turn (as its metadata) for the template, per role: tool calling and reasoning.
_KEPT_FIELDS = {
    "assistant": ("tool_calls", "reasoning_content"),
    "tool": ("tool_call_id", "name"),
    "user": (),
}
#: Reads an image part's URL (`url`, `where`: "messages[i].content[j]") into an Image, or raises MediaError.
ImageResolver = Callable[[str, str], Image]


def data_url_image(url: str, where: str) -> Image:
    """The default `ImageResolver`: ``data:`` URLs only (the API's --allow-image-urls adds http(s))."""
    if not url.startswith("data:"):
        raise MediaError(f"{where}: only data: URLs (data:image/png;base64,...) are read here")
    return Image.from_data_url(url, where)


def messages_to_history(
    messages: Sequence[dict[str, Any]],
    character: str,
    image_url: ImageResolver | None = None,
) -> tuple[ChatHistory, str | None, str | None, tuple[Image, ...]]:
    """Split OpenAI messages into (earlier turns, the new user input, the system message, the new input's
    images). An assistant's `tool_calls`, a tool result's `tool_call_id` / `name` and a reply's
    `reasoning_content` stay with the turn; so do image parts of user and assistant messages (read by
    `image_url`, default `data_url_image`). An image in a system or tool message is refused, as is one that
    cannot be read: ChatError / MediaError naming ``messages[i].content[j]`` (its `param`)."""
    system_parts, turns = [], []
    for index, message in enumerate(messages):
        role = message.get("role")
        content, images = _content(message.get("content"), index, role, image_url or data_url_image)
        if role in ("system", "developer"):
            system_parts.append(content)
        elif role in ("user", "assistant", "tool"):
            fields = {k: message[k] for k in _KEPT_FIELDS[role] if message.get(k) is not None}
            turns.append((role, content, images, fields))
        else:
            raise ChatError(f"messages[{index}].role must be system, user, assistant or tool, got {role!r}")
    user_input, images = None, ()
    if turns and turns[-1][0] == "user":
        _, user_input, images, _ = turns.pop()
    history = ChatHistory.new(character)
    for role, content, attached, fields in turns:
        history = history.with_turn(role, content, images=attached, **fields)
    return history, user_input, "\n\n".join(system_parts) if system_parts else None, images


def _content(content: Any, index: int, role: Any, image_url: ImageResolver) -> tuple[str, tuple[Image, ...]]:
    """Message content as (text, images): a string, or OpenAI content parts (text and image_url; other kinds
    are ignored, as before images were read)."""
    if isinstance(content, str):
        return content, ()
    if content is None:
        return "", ()
    if not isinstance(content, list):
        raise ChatError(f"messages[{index}].content must be a string or a list of content parts")
    texts, images = [], []
    for number, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(part.get("text") or "")
        elif kind == "image_url":
            images.append(_part_image(part, f"messages[{index}].content[{number}]", role, image_url))
    return "".join(texts), tuple(images)


def _part_image(part: dict[str, Any], where: str, role: Any, image_url: ImageResolver) -> Image:
    """The image of one ``image_url`` part (``{"url": ...}`` or the URL as a plain string)."""
    if role not in IMAGE_ROLES:
        raise _at(
            ChatError(f"{where}: images go in user (or assistant) messages, not in a {role} message"), where
        )
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url.strip():
        raise _at(
            ChatError(
                f'{where}: a part of type image_url needs image_url: {{"url": "data:image/png;base64,..."}}'
            ),
            where,
        )
    try:
        return image_url(url.strip(), where)
    except MediaError as exc:
        raise _at(exc, where) from None


def _at(exc: HearthError, where: str) -> HearthError:
    """`exc` naming the request field it is about (the API's error `param`)."""
    exc.param = where  # type: ignore[attr-defined]
    return exc
