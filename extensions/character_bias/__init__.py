"""Character bias: every chat reply starts with a chosen text, steering the character's mood or voice.

text-generation-webui's character_bias, on the ``bot_prefix_modifier`` hook: the bias is written into
the prompt as the start of the character's turn, the model continues from it, and the saved reply
begins with it (so the next turns see it too).
"""

from __future__ import annotations

from typing import Any

from webui.plugins import hookimpl


@hookimpl
def params() -> dict[str, Any]:
    return {"activate": True, "bias": "*I am so happy*"}


@hookimpl
def bot_prefix_modifier(prefix: str, state: dict[str, Any]) -> str | None:
    settings = state["params"]
    bias = settings["bias"].strip()
    if not settings["activate"] or not bias:
        return None
    return f"{prefix} {bias}".strip()
