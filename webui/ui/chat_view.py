"""How the Chat tab shows a chat: message dicts for ``gr.Chatbot`` with the speakers' names (cai-chat style:
each message opens with its speaker, the character's picture is the chatbot's avatar), the typing bubble,
and the short notices around the input box. Plain functions of plain values; no Gradio calls."""

from __future__ import annotations

from webui.prompts.history import ChatHistory
from webui.ui.chat_session import TokenCount
from webui.ui.markup import literal_markdown, literal_text

#: The reply bubble shown from the moment a message is sent until the first text of the reply arrives.
TYPING = "…"
NO_MODEL = (
    "⚠️ **No model is loaded.** Load one in the **Model** tab to chat; until then Generate cannot reply."
)


def chat_messages(
    history: ChatHistory | None, speakers: tuple[str, str] | None = None, typing: bool = False
) -> list[dict[str, str]]:
    """The chatbot's value: one message dict per turn, model text shown literally (see `literal_markdown`).

    `speakers` (user name, character name) opens each message with its speaker's name; `typing` adds the
    typing bubble after the last turn. A turn an extension rewrote for the model is shown as the person
    typed it (``metadata["visible"]``)."""
    if history is None:
        return []
    messages = [message(t.role, str(t.metadata.get("visible") or t.content), speakers) for t in history.turns]
    if typing:
        messages.append(message("assistant", TYPING, speakers))
    return messages


def message(role: str, text: str, speakers: tuple[str, str] | None = None) -> dict[str, str]:
    body = literal_markdown(text)
    if speakers is not None:
        name = speakers[0] if role == "user" else speakers[1]
        body = f"**{literal_text(name)}**\n\n{body}"
    return {"role": role, "content": body}


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
