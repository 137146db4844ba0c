"""Scan a JSON value that may still be arriving, for streaming tool-call arguments.

`scan_json` reads one JSON value from a position in a text that a model is still writing, and reports how
much of it can already be passed on (`JsonScan.out`) so that what was passed on never has to change:
keys, separators and numbers are held until the value after them starts or ends, strings are passed on as
they grow. `JsonScan.heal` closes what was passed on into valid JSON, for a value the model never
finished (cut by the token limit, or broken by a stray character). Two leniencies that models need: raw
control characters inside strings (a newline in generated code) are escaped, and a trailing comma before
``}`` or ``]`` is dropped, so what comes out always parses with a strict ``json.loads``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_WS = re.compile(r"[ \t\r\n]*")
_STRING_BODY = re.compile(r'(?:[^"\\]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')
_ESCAPE_PREFIX = re.compile(r"\\(?:u[0-9a-fA-F]{0,3})?\Z")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NUMBER_PREFIX = re.compile(r"-?(?:0|[1-9]\d*)?(?:\.\d*)?(?:[eE][+-]?\d*)?")
_CONTROL = re.compile(r"[\x00-\x1f]")
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_LITERALS = ("true", "false", "null")
_CLOSERS = {"{": "}", "[": "]"}

Status = Literal["complete", "partial", "invalid"]
#: Where partial strings stopped, by their position: lets a text that only grows be rescanned in linear time.
Memo = dict[int, tuple[int, str]]


@dataclass(frozen=True)
class JsonScan:
    """What `scan_json` found: `end` is after the value (complete), where the text ran out (partial), or the
    offending character (invalid); `out` the normalised text that is safe to pass on; `heal` what closes it."""

    status: Status
    end: int
    out: str
    heal: str


def _escape_controls(raw: str) -> str:
    return _CONTROL.sub(lambda m: _CONTROL_ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), raw)


def scan_string(text: str, pos: int, memo: Memo | None = None) -> tuple[Status, int, str]:
    """The string starting at ``text[pos] == '"'``: (status, end, normalised text so far, with its opening
    quote and, when complete, its closing one). Partial and invalid results stop before an escape that is
    not whole. `memo` remembers how far a partial string was read, for a text that only grows."""
    start, out = memo.get(pos, (pos + 1, '"')) if memo is not None else (pos + 1, '"')
    body_end = _STRING_BODY.match(text, start).end()
    out += _escape_controls(text[start:body_end])
    if body_end < len(text) and text[body_end] == '"':
        return "complete", body_end + 1, out + '"'
    if body_end == len(text) or _ESCAPE_PREFIX.match(text, body_end):
        if memo is not None:
            memo[pos] = (body_end, out)
        return "partial", len(text), out
    return "invalid", body_end, out


def _scalar(text: str, pos: int, final: bool) -> tuple[Status, int]:
    """A number or literal at `pos`: complete (end), partial (may still grow) or invalid."""
    rest = text[pos : pos + 5]
    for literal in _LITERALS:
        if text.startswith(literal, pos):
            return "complete", pos + len(literal)
        if literal.startswith(rest) and pos + len(rest) == len(text):
            return "partial", len(text)
    prefix_end = _NUMBER_PREFIX.match(text, pos).end()
    if prefix_end == len(text) and not final and prefix_end > pos:
        return "partial", len(text)
    number = _NUMBER.match(text, pos)
    if number is None:
        return ("partial", len(text)) if prefix_end == len(text) and prefix_end > pos else ("invalid", pos)
    if number.end() < prefix_end and prefix_end == len(text):
        return "partial", len(text)
    return "complete", number.end()


def scan_json(text: str, pos: int, final: bool = False, memo: Memo | None = None) -> JsonScan:
    """Scan the JSON value at `pos` (no leading whitespace). `final`: the text will not grow (a number at
    its very end is then whole). `memo`: see `scan_string`."""
    stack: list[str] = []
    out: list[str] = []
    pending: list[str] = []  # separators, keys and whitespace not passed on until what follows is known
    expect = "value"  # value | value_or_close | key | key_or_close | colon | comma_or_close
    i = pos

    def heal(extra: str = "") -> str:
        return extra + "".join(_CLOSERS[c] for c in reversed(stack))

    def result(status: Status, at: int, extra: str = "") -> JsonScan:
        return JsonScan(status, at, "".join(out), heal(extra))

    while True:
        if stack:
            ws_end = _WS.match(text, i).end()
            if ws_end > i:
                pending.append(text[i:ws_end])
                i = ws_end
        if i >= len(text):
            return result("partial", len(text))
        c = text[i]
        if expect in ("value", "value_or_close") and not (c == "]" and expect == "value_or_close"):
            if c in "{[":
                out.extend(pending)
                out.append(c)
                pending.clear()
                stack.append(c)
                expect = "key_or_close" if c == "{" else "value_or_close"
                i += 1
                continue
            if c == '"':
                status, end, string = scan_string(text, i, memo)
                out.extend(pending)
                pending.clear()
                out.append(string)
                if status != "complete":
                    return result(status, end, '"')
            else:
                status, end = _scalar(text, i, final)
                if status != "complete":
                    return result(status, end)
                out.extend(pending)
                pending.clear()
                out.append(text[i:end])
            i = end
            if not stack:
                return result("complete", i)
            expect = "comma_or_close"
        elif expect in ("key", "key_or_close") and c == '"':
            status, end, key = scan_string(text, i, memo)
            if status != "complete":
                return result(status, end)
            pending.append(key)
            expect, i = "colon", end
        elif expect == "colon" and c == ":":
            pending.append(":")
            expect, i = "value", i + 1
        elif expect == "comma_or_close" and c == ",":
            pending.append(",")
            expect, i = ("key" if stack[-1] == "{" else "value_or_close"), i + 1
        elif (
            c in "}]"
            and expect in ("key", "key_or_close", "comma_or_close", "value_or_close")
            and (_CLOSERS[stack[-1]] == c)
        ):
            out.extend(p for p in pending if p != ",")  # a trailing comma is dropped
            pending.clear()
            out.append(c)
            stack.pop()
            i += 1
            if not stack:
                return result("complete", i)
            expect = "comma_or_close"
        else:
            return result("invalid", i)
