"""Model text as Markdown that shows raw HTML literally: ``a<b then b>a`` stays that text, ``<think>`` and
``std::vector<int>`` stay visible, while **bold**, lists and code blocks still render.

Markdown renderers pass raw HTML through (then sanitise it away), so ``<`` that could open a tag and ``&``
that could start an entity are escaped, but only outside code: inside code spans and blocks the renderer
already shows text literally, and an entity there would be shown as typed (``&lt;``).
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^ {0,3}([-+*]|\d{1,9}[.)])(\s|$)")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#?\w+;)")
_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>&])")


def literal_text(text: str) -> str:
    """`text` (a name from a card) shown exactly as written: every Markdown and HTML character escaped."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(text.split()))


def _escape(text: str) -> str:
    return _TAG_START.sub("&lt;", _ENTITY.sub("&amp;", text))


def _escape_prose(text: str) -> str:
    """Escape a paragraph's text, leaving its code spans as they are."""
    parts, position = [], 0
    for span in _CODE_SPAN.finditer(text):
        parts += [_escape(text[position : span.start()]), span.group(0)]
        position = span.end()
    return "".join(parts) + _escape(text[position:])


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence) and set(stripped) == {fence[0]}


def literal_markdown(text: str) -> str:
    """`text` with raw HTML made literal, Markdown formatting kept (see the module docstring)."""
    out: list[str] = []
    paragraph: list[str] = []
    fence = ""
    last_prose = ""  # the last non-blank line outside code: an indented line after a list item is not code
    blank_before = True
    for line in text.splitlines(keepends=True):
        if fence:
            out.append(line)
            fence = "" if _closes(line, fence) else fence
            continue
        opened = _FENCE.match(line)
        indented_code = (
            line.startswith(("    ", "\t"))
            and line.strip()
            and blank_before
            and not paragraph
            and not _LIST_ITEM.match(last_prose)
            and not last_prose.startswith((" ", "\t"))
        )
        if opened or indented_code or not line.strip():
            out.append(_escape_prose("".join(paragraph)))
            paragraph = []
            out.append(line)
            fence = opened.group(1) if opened else ""
            blank_before = not line.strip() or bool(indented_code)
            continue
        paragraph.append(line)
        last_prose, blank_before = line, False
    out.append(_escape_prose("".join(paragraph)))
    return "".join(out)
