"""The worked example: every extension hook, each doing one small visible thing when its setting is on.

Enable it with ``--extensions example`` (or in the Session tab) and change its settings there; with the
defaults it changes nothing. docs/extensions.md walks through this file. Every hook takes only the
arguments it needs: pluggy passes a hook implementation any subset of the arguments its spec names.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from webui.extensions import add_context
from webui.plugins import hookimpl

log = logging.getLogger(__name__)


@hookimpl
def params() -> dict[str, Any]:
    """Settings and defaults; the Session tab shows a control for each (its type from the default)."""
    return {
        "input_suffix": "",  # appended to the prompt (plain generation) or to the user's message (chat)
        "output_suffix": "",  # appended to every reply
        "max_new_tokens": 0,  # when > 0, every generation is capped at this many tokens
        "banned_text": "",  # the tokens of this text are never generated
        "reply_prefix": "",  # chat replies start with this text
        "shout": False,  # the model sees the user's chat messages in capitals; the chat shows them as typed
        "prompt_note": "",  # a line added to the top of every chat prompt
    }


@hookimpl
def setup(app: Any) -> None:
    """Runs when the extension is enabled: load data here, not at import."""
    log.info("example extension enabled (model: %s)", app.models.model_name or "none loaded")


@hookimpl
def ui(ctx: Any) -> None:
    import gradio as gr

    gr.Markdown("The example extension is on. Its settings are in the Session tab under *example*.")


@hookimpl
def input_modifier(text: str, state: dict[str, Any], is_chat: bool) -> str | None:
    suffix = state["params"]["input_suffix"]
    return text + suffix if suffix else None


@hookimpl
def output_modifier(text: str, state: dict[str, Any]) -> str | None:
    suffix = state["params"]["output_suffix"]
    return text + suffix if suffix else None


@hookimpl
def state_modifier(request: Any, state: dict[str, Any]) -> Any:
    """Adjust generation parameters: return a changed copy of the request (it is validated again)."""
    limit = state["params"]["max_new_tokens"]
    return request.model_copy(update={"max_new_tokens": limit}) if limit > 0 else None


@hookimpl
def chat_input_modifier(text: str, visible_text: str, state: dict[str, Any]) -> tuple[str, str] | None:
    return (text.upper(), visible_text) if state["params"]["shout"] else None


@hookimpl
def bot_prefix_modifier(prefix: str, state: dict[str, Any]) -> str | None:
    return prefix + state["params"]["reply_prefix"] or None


@hookimpl
def history_modifier(history: Any) -> None:
    """Return a changed ChatHistory to change what is prompted and saved; this example leaves it."""
    return None


@hookimpl
def custom_generate_chat_prompt(user_input: str | None, history: Any, options: Any, character: Any,
                                state: dict[str, Any], build: Any) -> Any:
    """Wrap the default builder rather than replace it: add a note to the context, let `build` do the rest."""
    note = state["params"]["prompt_note"]
    if not note:
        return None  # pass: the next extension, or Hearth's default, builds the prompt
    options, character = add_context(options, character, note, before=True)
    return build(user_input, history, options, character)


class BanTokens:
    """A logits processor (transformers' interface): the given token ids can never be picked."""

    def __init__(self, token_ids: list[int]):
        self.token_ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[..., self.token_ids] = float("-inf")
        return scores


@hookimpl
def logits_processor(state: dict[str, Any]) -> list[Any] | None:
    text = state["params"]["banned_text"]
    return [BanTokens(state["app"].core.tokenize(text, add_bos=False))] if text else None


@hookimpl
def tokenizer_modifier(state: dict[str, Any], prompt: str, input_ids: list[int]) -> list[int] | None:
    log.debug("example: %d prompt tokens", len(input_ids))
    return None


@hookimpl
def custom_css() -> str:
    return ".hearth-example { font-style: italic; }"


@hookimpl
def custom_js() -> str:
    return "console.debug('Hearth example extension loaded');"
