"""Where long_memory keeps its running summary, and the text it asks the model to summarise.

The summary lives in the chat itself: the metadata of the last turn it covers holds
``{"long_memory": {"summary": "..."}}``, so saving, exporting and reopening the chat keep it, and
turns added later are simply not covered yet. Pure: no model here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from webui.prompts.history import ChatHistory, Turn

KEY = "long_memory"


@dataclass(frozen=True)
class Memory:
    """The newest summary and the index of the first turn it does not cover."""

    summary: str = ""
    start: int = 0


def read_memory(history: ChatHistory) -> Memory:
    for index in range(len(history.turns) - 1, -1, -1):
        stored = history.turns[index].metadata.get(KEY)
        if isinstance(stored, dict) and isinstance(stored.get("summary"), str):
            return Memory(stored["summary"], index + 1)
    return Memory()


def pinned(history: ChatHistory) -> int:
    """How many leading turns the prompt builder always keeps (an opening greeting)."""
    return 1 if history.turns and history.turns[0].role == "assistant" else 0


def uncovered(history: ChatHistory, memory: Memory) -> ChatHistory:
    """The history as the prompt should see it: the greeting, then only turns the summary lacks."""
    keep = pinned(history)
    first = max(memory.start, keep)
    return history.with_turns((*history.turns[:keep], *history.turns[first:]))


def remember(history: ChatHistory, last_index: int, summary: str) -> ChatHistory:
    """The history with `summary` stored on turn `last_index` (it covers every turn up to there)."""
    turns = list(history.turns)
    turn = turns[last_index]
    turns[last_index] = replace(turn, metadata={**turn.metadata, KEY: {"summary": summary}})
    return history.with_turns(tuple(turns))


def transcript(turns: list[Turn], user_name: str, bot_name: str) -> str:
    return "\n".join(f"{user_name if t.role == 'user' else bot_name}: {t.content.strip()}" for t in turns)


def summary_prompt(instruction: str, previous: str, new_lines: str) -> str:
    earlier = f"Summary so far:\n{previous.strip()}\n\n" if previous.strip() else ""
    return f"{instruction.strip()}\n\n{earlier}Conversation:\n{new_lines}\n\nSummary:"


def fallback_summary(previous: str, new_lines: str, limit: int = 600) -> str:
    """Used when the model returns nothing: the previous summary plus the new lines, shortened."""
    text = (previous.strip() + "\n" + new_lines.strip()).strip()
    return text if len(text) <= limit else "..." + text[-limit:]
