"""Lorebook entries: reading SillyTavern world info, deciding which entries a chat triggers, fitting a budget.

Pure: no model, no files beyond `load_book`. SillyTavern's world-info file is
``{"entries": {"0": {"key": [...], "keysecondary": [...], "content": "...", "constant": bool,
"order": int, "position": int, "disable": bool, "selective": bool, "selectiveLogic": int, ...}}}``;
a V2 character card's ``character_book`` (``keys``, ``secondary_keys``, ``insertion_order``,
``enabled``, ``position: before_char|after_char``) is read too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.errors import HearthError

BEFORE, AFTER = 0, 1  # SillyTavern positions: before / after the character definitions
# selectiveLogic: how secondary keys combine with a primary match.
AND_ANY, NOT_ALL, NOT_ANY, AND_ALL = 0, 1, 2, 3
_REGEX_KEY = re.compile(r"^/(.+)/([a-z]*)$", re.DOTALL)


class LorebookError(HearthError):
    """A lorebook file is unreadable or not world info."""


@dataclass(frozen=True)
class Entry:
    """One piece of world info. Higher ``order`` wins the budget first and sits nearer the chat."""

    content: str
    keys: tuple[str, ...] = ()
    secondary: tuple[str, ...] = ()
    constant: bool = False
    order: int = 100
    position: int = BEFORE
    selective: bool = True
    logic: int = AND_ANY
    disabled: bool = False
    scan_depth: int | None = None
    case_sensitive: bool = False
    whole_words: bool = True
    comment: str = ""


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise LorebookError(f"{where}: keys must be a list of strings")
    return tuple(k.strip() for k in value if k.strip())


def _entry(raw: Any, where: str) -> Entry:
    if not isinstance(raw, dict) or not isinstance(raw.get("content", ""), str):
        raise LorebookError(f"{where}: an entry must be an object with text 'content'")
    ext = raw.get("extensions") if isinstance(raw.get("extensions"), dict) else {}
    position = raw.get("position", ext.get("position", BEFORE))
    if isinstance(position, str):  # V2 card: before_char / after_char
        position = AFTER if position == "after_char" else BEFORE
    depth = raw.get("scanDepth", ext.get("scan_depth"))
    try:
        return Entry(
            content=raw.get("content", ""),
            keys=_strings(raw.get("key", raw.get("keys")), where),
            secondary=_strings(raw.get("keysecondary", raw.get("secondary_keys")), where),
            constant=bool(raw.get("constant", False)),
            order=int(raw.get("order", raw.get("insertion_order", 100)) or 0),
            position=int(position),
            selective=bool(raw.get("selective", True)),
            logic=int(raw.get("selectiveLogic", ext.get("selectiveLogic", AND_ANY)) or 0),
            disabled=bool(raw.get("disable", False)) or raw.get("enabled", True) is False,
            scan_depth=int(depth) if isinstance(depth, (int, float)) else None,
            case_sensitive=bool(raw.get("caseSensitive", raw.get("case_sensitive")) or False),
            whole_words=raw.get("matchWholeWords", ext.get("match_whole_words")) is not False,
            comment=str(raw.get("comment", raw.get("name", "")) or ""),
        )
    except (TypeError, ValueError) as exc:
        raise LorebookError(f"{where}: {exc}") from None


def entries_from_data(data: Any) -> list[Entry]:
    """World info from parsed JSON: SillyTavern's file, or a card's character_book."""
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"].get("character_book", data["data"])
    if isinstance(data, dict) and isinstance(data.get("character_book"), dict):
        data = data["character_book"]
    entries = data.get("entries") if isinstance(data, dict) else None
    if isinstance(entries, dict):
        items = list(entries.items())
    elif isinstance(entries, list):
        items = [(str(i), e) for i, e in enumerate(entries)]
    else:
        raise LorebookError("not world info: expected an 'entries' object or list")
    return [_entry(raw, f"entry {key}") for key, raw in items]


def load_book(path: Path) -> list[Entry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LorebookError(f"cannot read lorebook {path.name}: {exc}") from None
    return entries_from_data(data)


def _matches(key: str, text: str, entry: Entry) -> bool:
    regex = _REGEX_KEY.match(key)
    if regex:
        flags = re.IGNORECASE if "i" in regex.group(2) else 0
        try:
            return re.search(regex.group(1), text, flags) is not None
        except re.error:
            return False
    flags = 0 if entry.case_sensitive else re.IGNORECASE
    pattern = re.escape(key)
    if entry.whole_words:
        pattern = rf"(?<!\w){pattern}(?!\w)"
    return re.search(pattern, text, flags) is not None


def triggered(entry: Entry, text: str) -> bool:
    """Whether the scanned text activates the entry (constant entries always do)."""
    if entry.disabled or not entry.content.strip():
        return False
    if entry.constant:
        return True
    if not any(_matches(k, text, entry) for k in entry.keys):
        return False
    if not entry.selective or not entry.secondary:
        return True
    hits = [_matches(k, text, entry) for k in entry.secondary]
    return {AND_ANY: any(hits), NOT_ALL: not all(hits), NOT_ANY: not any(hits), AND_ALL: all(hits)}.get(
        entry.logic, any(hits)
    )


def select(entries: Sequence[Entry], messages: Sequence[str], *, budget: int, scan_depth: int,
           count_tokens: Callable[[str], int]) -> list[Entry]:
    """The entries to insert: triggered by the last ``scan_depth`` messages (newest last), constant ones
    first, then by descending order, skipping any that would overflow ``budget`` tokens. Returned in
    insertion order (ascending ``order``)."""
    chosen: list[Entry] = []
    used = 0
    ranked = sorted(entries, key=lambda e: (not e.constant, -e.order))
    for entry in ranked:
        depth = entry.scan_depth if entry.scan_depth is not None else scan_depth
        window = "\n".join(messages[-depth:]) if depth > 0 else ""
        if not triggered(entry, window):
            continue
        cost = count_tokens(entry.content.strip() + "\n")
        if used + cost > budget:
            continue
        used += cost
        chosen.append(entry)
    return sorted(chosen, key=lambda e: e.order)


def render(entries: Sequence[Entry]) -> tuple[str, str]:
    """(text before the character definitions, text after them)."""
    before = "\n".join(e.content.strip() for e in entries if e.position == BEFORE)
    after = "\n".join(e.content.strip() for e in entries if e.position != BEFORE)
    return before, after
