"""The syntax of each family's tool calls: one small reader per way a call is written.

Each reader gets the reply text, the position of a marker (or of a bare call at the start of the reply)
and a `Ctx`, and returns a `Group`: the calls it read and where it ended (``complete``), the calls read so
far while the model is still writing (``partial``: a call is reported once its name is known and its
arguments have started, and never withdrawn after that), or ``failed`` (not a call: the marker is
ordinary text). Readers never report a prefix of a marker as ``partial`` once the reply is final, so
nothing is swallowed. ``webui.prompts.tool_calls`` drives them over a reply, whole or streamed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from webui.prompts.partial_json import Memo, scan_json, scan_string

_WS = re.compile(r"[ \t\r\n]*")
_EXTRA_BRACKETS = re.compile(r"[\s}\]]*")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]*")
MAX_HEADER = 256  # a call header longer than this without its closing token is not a header

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
SEED_OPEN, SEED_CLOSE = "<seed:tool_call>", "</seed:tool_call>"
FUNCTION_OPEN, FUNCTION_CLOSE, PARAMETER_OPEN, PARAMETER_CLOSE = (
    "<function=",
    "</function>",
    "<parameter=",
    "</parameter>",
)
ARG_KEY, ARG_KEY_END, ARG_VALUE, ARG_VALUE_END = "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"


@dataclass
class Call:
    """A call read so far: `args` is normalised JSON text that only grows; `heal` closes it."""

    name: str
    args: str
    heal: str = ""
    id: str | None = None


@dataclass
class Group:
    status: Literal["complete", "partial", "failed"]
    end: int = 0
    calls: list[Call] = field(default_factory=list)


@dataclass(frozen=True)
class Ctx:
    """What readers need besides the text: the allowed names (None: any) and parameter schemas (to type
    XML argument values), and whether the reply is final."""

    names: Collection[str] | None
    schemas: Mapping[str, Mapping[str, Any]]
    final: bool
    memo: Memo | None = None  # a streamer's, for the text since its last restart point

    def allowed(self, name: str) -> bool:
        return bool(name) and (self.names is None or name in self.names)


Reader = Callable[[str, int, Ctx], Group]
Result = tuple[Literal["complete", "partial", "failed"], int, Call | None]
FAILED: Result = ("failed", 0, None)


def ws(text: str, i: int) -> int:
    return _WS.match(text, i).end()


def may_become(text: str, i: int, literal: str) -> bool:
    """Whether the text from `i` to its end is the beginning of `literal` (a longer reply may complete it)."""
    return len(text) - i < len(literal) and literal.startswith(text[i:])


def next_literal(text: str, i: int, literals: tuple[str, ...], ctx: Ctx) -> tuple[str, str, int]:
    """After whitespace at `i`: ("match", literal, end), ("partial", "", i) while the text may still become
    one (not when final), or ("none", "", i)."""
    j = ws(text, i)
    if not ctx.final and any(may_become(text, j, lit) for lit in literals):
        return "partial", "", i
    for literal in literals:
        if text.startswith(literal, j):
            return "match", literal, j + len(literal)
    return "none", "", i


def header(text: str, i: int, until: str, ctx: Ctx) -> tuple[str, int] | None | Literal[False]:
    """The text from `i` to `until` (one short line) and the position after it; None while it may still
    come, False when it cannot."""
    at = text.find(until, i)
    if at < 0:
        return None if not ctx.final and len(text) - i <= MAX_HEADER and "\n" not in text[i:] else False
    if at - i > MAX_HEADER or "\n" in text[i:at]:
        return False
    return text[i:at], at + len(until)


def json_args(text: str, i: int, call: Call, ctx: Ctx) -> Result:
    """Arguments object at `i` for a committed call (its name came first)."""
    scan = scan_json(text, i, ctx.final, ctx.memo)
    call.args, call.heal = scan.out, scan.heal
    if scan.status == "partial":
        return "partial", len(text), call
    if scan.status == "invalid":
        call.args, call.heal = call.args + call.heal, ""
    return "complete", scan.end, call


def _args_from_string(value: str) -> str | None:
    """Arguments written as a JSON string holding the object (some models double-encode)."""
    if not value.strip():
        return "{}"
    try:
        obj = json.loads(value)
        return value if isinstance(obj, dict) else None
    except ValueError:
        try:
            obj = json.loads(value, strict=False)
        except ValueError:
            return None
        return json.dumps(obj, ensure_ascii=False) if isinstance(obj, dict) else None


def json_call_object(text: str, i: int, ctx: Ctx, bare: bool) -> Result:
    """``{"name": ..., "arguments": {...}}`` at `i`: keys in any order, ``parameters`` for ``arguments``,
    ``tool_name`` for ``name`` (Command R), an optional ``id``. `bare`: no marker announced a call, so only
    those keys may appear and the arguments are required."""
    name: str | None = None
    call_id: str | None = None
    args: str | None = None
    call: Call | None = None
    expect, j = "key_or_close", i + 1

    def stop(at: int) -> Result:
        if call is None:
            return FAILED
        call.args, call.heal = call.args + call.heal, ""
        return "complete", at, call

    while True:
        j = ws(text, j)
        if j >= len(text):
            return "partial", len(text), call
        c = text[j]
        if c == "}" and expect != "key":
            if call is None:
                if name is None or (args is None and bare):
                    return FAILED
                call = Call(name, "{}" if args is None else args, id=call_id)
            return "complete", j + 1, call
        if expect == "comma_or_close":
            if c != ",":
                return stop(j)
            expect, j = "key", j + 1
            continue
        if c != '"':
            return stop(j)
        status, key_end, key = scan_string(text, j, ctx.memo)
        if status != "complete":
            return ("partial", len(text), call) if status == "partial" else stop(j)
        key = json.loads(key)
        k = ws(text, key_end)
        if k >= len(text):
            return "partial", len(text), call
        if text[k] != ":":
            return stop(k)
        k = ws(text, k + 1)
        if k >= len(text):
            return "partial", len(text), call
        v = text[k]
        if key in ("name", "tool_name") and name is None:
            if v != '"':
                return stop(k)
            status, j, raw = scan_string(text, k, ctx.memo)
            if status != "complete":
                return ("partial", len(text), call) if status == "partial" else stop(k)
            name = json.loads(raw)
            if not ctx.allowed(name):
                return FAILED
            if args is not None:
                call = Call(name, args, id=call_id)
        elif key in ("arguments", "parameters") and call is None and args is None:
            if v == "{" and name is not None:
                call = Call(name, "", id=call_id)
                status, j, call = json_args(text, k, call, ctx)
                if status == "partial":
                    return status, j, call
            elif v == "{":
                scan = scan_json(text, k, ctx.final, ctx.memo)
                if scan.status != "complete":
                    return ("partial", len(text), None) if scan.status == "partial" else FAILED
                args, j = scan.out, scan.end
            elif v == '"':
                status, j, raw = scan_string(text, k, ctx.memo)
                if status != "complete":
                    return ("partial", len(text), call) if status == "partial" else FAILED
                args = _args_from_string(json.loads(raw))
                if args is None:
                    return FAILED
            elif text.startswith("null", k):
                args, j = "{}", k + 4
            elif may_become(text, k, "null") and not ctx.final:
                return "partial", len(text), call
            else:
                return FAILED
            if call is None and name is not None and args is not None:
                call = Call(name, args, id=call_id)
        elif bare and call is None and key not in ("id", "type"):
            return FAILED
        else:
            scan = scan_json(text, k, ctx.final, ctx.memo)
            if scan.status != "complete":
                return ("partial", len(text), call) if scan.status == "partial" else stop(k)
            if key == "id" and v == '"':
                call_id = json.loads(scan.out)
                if call is not None and call.id is None:
                    call.id = call_id
            j = scan.end
        expect = "comma_or_close"


def json_calls(text: str, i: int, ctx: Ctx, bare: bool, separators: str = ";,") -> Group:
    """A JSON list of call objects, or call objects one after another (separated by whitespace or one
    of `separators`)."""
    calls: list[Call] = []
    listed = text[i] == "["
    j = i + 1 if listed else i
    while True:
        j = ws(text, j)
        if j >= len(text):
            return Group("partial", calls=calls)
        if listed and text[j] == "]" and calls:
            return Group("complete", j + 1, calls)
        if text[j] != "{":
            return Group("complete", j, calls) if calls else Group("failed")
        status, end, call = json_call_object(text, j, ctx, bare)
        if status == "failed":
            return Group("complete", j, calls) if calls else Group("failed")
        if call is not None:
            calls.append(call)
        if status == "partial":
            return Group("partial", calls=calls)
        k = ws(text, end)
        if k < len(text) and (text[k] in separators or listed and text[k] == ","):
            k = ws(text, k + 1)
        if k >= len(text) and not ctx.final:
            return Group("partial", calls=calls)
        if k < len(text) and (text[k] == "{" or listed and text[k] == "]"):
            j = k
            continue
        return Group("complete", end, calls)


def _convert(value: str, schema: Mapping[str, Any] | None) -> Any:
    """An XML argument value as the JSON value its schema says (untyped: JSON if it reads as a non-string)."""
    types = (schema or {}).get("type")
    types = types if isinstance(types, list) else [types] if types else []
    if "string" in types:
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if types or not isinstance(parsed, str) else value


def _add_arg(call: Call, key: str, value: str, ctx: Ctx) -> None:
    schema = ctx.schemas.get(call.name, {}).get("properties", {}).get(key)
    piece = (
        json.dumps(key, ensure_ascii=False) + ": " + json.dumps(_convert(value, schema), ensure_ascii=False)
    )
    call.args += piece if call.args == "{" else ", " + piece


def _close_args(call: Call) -> Call:
    call.args, call.heal = call.args + "}", ""
    return call


@dataclass(frozen=True)
class XmlTags:
    """The tags of an XML-style call: ``{open}NAME{name_end}`` ``{param}KEY{param_name_end}VALUE{param_close}``
    ... ``{close}``."""

    open: str
    name_end: str
    param: str
    param_name_end: str
    param_close: str
    close: str


QWEN_XML = XmlTags(FUNCTION_OPEN, ">", PARAMETER_OPEN, ">", PARAMETER_CLOSE, FUNCTION_CLOSE)


def xml_function(text: str, i: int, ctx: Ctx, tags: XmlTags = QWEN_XML) -> Result:
    """After ``<function=`` (`i`): Qwen3-Coder / Seed-OSS ``NAME><parameter=KEY>VALUE</parameter>...
    </function>`` (MiniMax's ``<invoke name=...>`` with other `tags`), or a JSON object after the name
    (Llama 3.1's and Functionary's ``<function=NAME>{...}</function>``)."""
    head = header(text, i, tags.name_end, ctx)
    if not head:
        return ("partial", len(text), None) if head is None else FAILED
    name, j = head[0].strip(), head[1]
    if not ctx.allowed(name):
        return FAILED
    k = ws(text, j)
    if k < len(text) and text[k] == "{":
        status, end, call = json_args(text, k, Call(name, "", id=None), ctx)
        if status == "partial":
            return status, end, call
        kind, _, after = next_literal(text, end, (tags.close,), ctx)
        return ("partial", len(text), call) if kind == "partial" else ("complete", after, call)
    call = Call(name, "{", heal="}")
    while True:
        kind, literal, j = next_literal(text, j, (tags.param, tags.close), ctx)
        if kind == "partial":
            return "partial", len(text), call
        if kind == "none" or literal == tags.close:
            return "complete", j, _close_args(call)
        key = header(text, j, tags.param_name_end, ctx)
        if not key:
            if key is None:
                return "partial", len(text), call
            return "complete", j - len(tags.param), _close_args(call)
        start = key[1]
        terminators = (tags.param_close, tags.param, tags.close)
        ends = [(at, t) for t in terminators if (at := text.find(t, start)) >= 0]
        if not ends:
            if not ctx.final:
                return "partial", len(text), call
            ends = [(len(text), "")]
        at, terminator = min(ends)
        value = text[start:at].removeprefix("\n").removesuffix("\n")
        _add_arg(call, key[0].strip(), value, ctx)
        j = at + len(terminator) if terminator == tags.param_close else at


def glm_call(text: str, i: int, ctx: Ctx, close: str) -> Result:
    """GLM-4.5+ ``NAME<arg_key>KEY</arg_key><arg_value>VALUE</arg_value>...`` (inside the tags)."""
    head = IDENT.match(text, i)
    if head is None:
        return FAILED
    kind, literal, j = next_literal(text, head.end(), (ARG_KEY, close), ctx)
    if kind != "match":
        return ("partial", len(text), None) if kind == "partial" else FAILED
    if not ctx.allowed(head.group()):
        return FAILED
    call = Call(head.group(), "{", heal="}")
    if literal == close:
        return "complete", head.end(), _close_args(call)
    while True:  # j: after <arg_key>
        key_end = text.find(ARG_KEY_END, j)
        if key_end < 0:
            return (
                ("complete", j - len(ARG_KEY), _close_args(call))
                if ctx.final
                else ("partial", len(text), call)
            )
        kind, _, v = next_literal(text, key_end + len(ARG_KEY_END), (ARG_VALUE,), ctx)
        if kind != "match":
            return (
                ("partial", len(text), call)
                if kind == "partial"
                else ("complete", j - len(ARG_KEY), _close_args(call))
            )
        value_end = text.find(ARG_VALUE_END, v)
        if value_end < 0 and not ctx.final:
            return "partial", len(text), call
        _add_arg(call, text[j:key_end].strip(), text[v:value_end] if value_end >= 0 else text[v:], ctx)
        if value_end < 0:
            return "complete", len(text), _close_args(call)
        kind, _, j = next_literal(text, value_end + len(ARG_VALUE_END), (ARG_KEY,), ctx)
        if kind == "partial":
            return "partial", len(text), call
        if kind == "none":
            return "complete", j, _close_args(call)


def tagged(open_tag: str, close_tag: str) -> Reader:
    """``<tool_call>`` blocks holding a JSON call object (Hermes, Qwen2.5/3), an XML function (Qwen3-Coder,
    Seed-OSS) or a GLM call."""

    def read(text: str, i: int, ctx: Ctx) -> Group:
        j = ws(text, i + len(open_tag))
        if j >= len(text):
            return Group("partial")
        if text[j] == "{":
            status, end, call = json_call_object(text, j, ctx, bare=False)
        elif text.startswith(FUNCTION_OPEN, j):
            status, end, call = xml_function(text, j + len(FUNCTION_OPEN), ctx)
        elif may_become(text, j, FUNCTION_OPEN) and not ctx.final:
            return Group("partial")
        else:
            status, end, call = glm_call(text, j, ctx, close_tag)
        return _closed_by(text, status, end, call, close_tag, ctx)

    return read


def _closed_by(text: str, status: str, end: int, call: Call | None, close: str, ctx: Ctx) -> Group:
    if status == "failed" or call is None:
        return Group("failed" if status == "failed" or ctx.final else "partial")
    if status == "partial":
        return Group("partial", calls=[call])
    extra = _EXTRA_BRACKETS.match(text, end).end()  # a stray "}" models add after the call object
    kind, _, after = next_literal(text, extra, (close,), ctx)
    if kind == "none" and extra > end:
        kind, _, after = next_literal(text, end, (close,), ctx)
    return Group("partial", calls=[call]) if kind == "partial" else Group("complete", after, [call])


def bare_function(text: str, i: int, ctx: Ctx) -> Group:
    """``<function=...>`` without the ``<tool_call>`` before it (Qwen3-Coder sometimes skips it)."""
    status, end, call = xml_function(text, i + len(FUNCTION_OPEN), ctx)
    return _closed_by(text, status, end, call, HERMES_CLOSE, ctx)
