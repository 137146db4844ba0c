"""Tool-call formats announced by special tokens: Mistral ``[TOOL_CALLS]``, DeepSeek, Kimi K2 and MiniMax
call sections, gpt-oss (harmony) messages, Llama 3's ``<|python_tag|>``, Granite's ``<|tool_call|>``,
Command R's ``<|START_ACTION|>``, and a reply that is only JSON. Readers follow the contract in
``webui.prompts.tool_call_syntax``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from webui.prompts.tool_call_syntax import (
    FAILED,
    IDENT,
    Call,
    Ctx,
    Group,
    Reader,
    Result,
    XmlTags,
    header,
    json_args,
    json_calls,
    may_become,
    next_literal,
    ws,
    xml_function,
)

TOOL_CALLS_OPEN, TOOL_CALLS_CLOSE = "<tool_calls>", "</tool_calls>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_CALLS, MISTRAL_ARGS, MISTRAL_CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
GRANITE_CALL = "<|tool_call|>"
DS_CALLS_BEGIN, DS_CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
DS_CALL_BEGIN, DS_CALL_END, DS_SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
KIMI_SECTION_BEGIN, KIMI_SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
KIMI_CALL_BEGIN, KIMI_ARGS_BEGIN, KIMI_CALL_END = (
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
)
HARMONY_START, HARMONY_CHANNEL, HARMONY_MESSAGE, HARMONY_CALL = (
    "<|start|>",
    "<|channel|>",
    "<|message|>",
    "<|call|>",
)
HARMONY_DROPPED = ("<|end|>", "<|return|>", HARMONY_CALL)
MINIMAX_OPEN, MINIMAX_CLOSE = "<minimax:tool_call>", "</minimax:tool_call>"
MINIMAX_XML = XmlTags('<invoke name="', '">', '<parameter name="', '">', "</parameter>", "</invoke>")
COMMAND_R_OPEN, COMMAND_R_CLOSE = "<|START_ACTION|>", "<|END_ACTION|>"


def json_after(marker: str, close: str = "") -> Reader:
    """A marker followed by JSON call objects or a list of them: ``[TOOL_CALLS][...]`` (Mistral v0.3),
    ``<|tool_call|>[...]`` (Granite), ``<|python_tag|>{...}`` (Llama 3), ``<tool_calls>[...]</tool_calls>``,
    ``<|START_ACTION|>[...]<|END_ACTION|>`` (Command R)."""

    def read(text: str, i: int, ctx: Ctx) -> Group:
        j = ws(text, i + len(marker))
        if j >= len(text):
            return Group("partial")
        if text[j] not in "[{":
            return Group("failed")
        group = json_calls(text, j, ctx, bare=False)
        if close and group.status == "complete":
            kind, _, after = next_literal(text, group.end, (close,), ctx)
            return (
                Group("partial", calls=group.calls)
                if kind == "partial"
                else Group("complete", after, group.calls)
            )
        return group

    return read


def mistral(text: str, i: int, ctx: Ctx) -> Group:
    """``[TOOL_CALLS]`` then a JSON list (v0.3), or ``NAME[ARGS]{...}`` / ``NAME[CALL_ID]ID[ARGS]{...}``
    (Magistral, Devstral, Mistral Small 3.2)."""
    j = ws(text, i + len(MISTRAL_CALLS))
    if j < len(text) and text[j] in "[{":
        return json_after(MISTRAL_CALLS)(text, i, ctx)
    head = IDENT.match(text, j)
    if head is None or head.end() == len(text):
        return Group("partial" if head is not None or j == len(text) else "failed")
    k, call_id = head.end(), None
    if text.startswith(MISTRAL_CALL_ID, k):
        given = header(text, k + len(MISTRAL_CALL_ID), MISTRAL_ARGS, ctx)
        if not given:
            return Group("partial" if given is None else "failed")
        call_id, k = given[0].strip(), given[1] - len(MISTRAL_ARGS)
    elif may_become(text, k, MISTRAL_CALL_ID) and not ctx.final:
        return Group("partial")
    kind, _, k = next_literal(text, k, (MISTRAL_ARGS,), ctx)
    if kind != "match":
        return Group("partial" if kind == "partial" else "failed")
    k = ws(text, k)
    if k >= len(text):
        return Group("partial")
    if text[k] != "{" or not ctx.allowed(head.group()):
        return Group("failed")
    status, end, call = json_args(text, k, Call(head.group(), "", id=call_id), ctx)
    return Group(status, end, [call])


def section(begin: str, call_begin: str, call_end: str, end: str, read_call: Callable[..., Result]) -> Reader:
    """A section of calls: ``begin (call_begin CALL call_end)* end`` (DeepSeek, Kimi K2, MiniMax); the
    section markers are optional."""

    def read(text: str, i: int, ctx: Ctx) -> Group:
        j = i + len(begin) if text.startswith(begin, i) else i
        calls: list[Call] = []
        while True:
            kind, literal, k = next_literal(text, j, (call_begin, end), ctx)
            if kind == "partial":
                return Group("partial", calls=calls)
            if kind == "none" or literal == end:
                if kind == "none" and not calls:
                    return Group("failed")
                return Group("complete", k, calls)
            status, after, call = read_call(text, k, ctx)
            if status == "failed" or call is None and status == "complete":
                return Group("complete", j, calls) if calls else Group("failed")
            if call is not None:
                calls.append(call)
            if status == "partial":
                return Group("partial", calls=calls)
            kind, _, j = next_literal(text, after, (call_end,), ctx)
            if kind == "partial":
                return Group("partial", calls=calls)

    return read


def deepseek_call(text: str, i: int, ctx: Ctx) -> Result:
    """R1: ``function<sep>NAME\\n```json\\n{...}\\n```  ``; V3.1: ``NAME<sep>{...}``."""
    head = header(text, i, DS_SEP, ctx)
    if not head:
        return ("partial", len(text), None) if head is None else FAILED
    name, k = head[0].strip(), ws(text, head[1])
    if k >= len(text):
        return "partial", len(text), None
    fenced = text[k] != "{"
    if fenced:
        line = header(text, head[1], "\n", ctx)
        if not line:
            return ("partial", len(text), None) if line is None else FAILED
        name, k = line[0].strip(), line[1]
        kind, _, k = next_literal(text, k, ("```json", "```"), ctx)
        if kind == "partial":
            return "partial", len(text), None
        k = ws(text, k)
        if k >= len(text):
            return "partial", len(text), None
    if text[k] != "{" or not ctx.allowed(name):
        return FAILED
    status, end, call = json_args(text, k, Call(name, ""), ctx)
    if status == "complete" and fenced:
        kind, _, end = next_literal(text, end, ("```",), ctx)
        if kind == "partial":
            return "partial", len(text), call
    return status, end, call


def kimi_call(text: str, i: int, ctx: Ctx) -> Result:
    """``functions.NAME:INDEX<|tool_call_argument_begin|>{...}``: the id names the function."""
    head = header(text, i, KIMI_ARGS_BEGIN, ctx)
    if not head:
        return ("partial", len(text), None) if head is None else FAILED
    call_id = head[0].strip()
    name = call_id.rsplit(":", 1)[0].removeprefix("functions.")
    k = ws(text, head[1])
    if k >= len(text):
        return "partial", len(text), None
    if text[k] != "{" or not ctx.allowed(name):
        return FAILED
    return json_args(text, k, Call(name, "", id=call_id), ctx)


_RECIPIENT = re.compile(r"\bto=([^\s<]+)")


def harmony(text: str, i: int, ctx: Ctx) -> Group:
    """gpt-oss: ``[<|start|>assistant][ to=functions.NAME]<|channel|>commentary[ to=functions.NAME]
    [<|constrain|>]json<|message|>{...}<|call|>``; a header without a recipient (the final or a preamble
    message) is dropped and its text is content."""
    head = header(text, i, HARMONY_MESSAGE, ctx)
    if not head:
        return Group("partial" if head is None else "failed")
    recipient = _RECIPIENT.search(head[0])
    if recipient is None:
        return Group("complete", head[1])
    name = recipient.group(1).removeprefix("functions.")
    k = ws(text, head[1])
    if k >= len(text):
        return Group("partial")
    if not recipient.group(1).startswith("functions.") or text[k] != "{" or not ctx.allowed(name):
        return Group("failed")
    status, end, call = json_args(text, k, Call(name, ""), ctx)
    if status == "partial":
        return Group("partial", calls=[call])
    kind, _, after = next_literal(text, end, (HARMONY_CALL,), ctx)
    return Group("partial", calls=[call]) if kind == "partial" else Group("complete", after, [call])


def plain_json(text: str, i: int, ctx: Ctx) -> Group:
    """A reply that is only calls: a call object, several, or a list, optionally in a ```json fence."""
    kind, _, j = next_literal(text, i, ("```json", "```"), ctx)
    if kind == "partial":
        return Group("partial")
    fenced = kind == "match"
    j = ws(text, j)
    if j >= len(text):
        return Group("partial" if not ctx.final else "failed")
    if text[j] not in "[{":
        return Group("failed")
    group = json_calls(text, j, ctx, bare=True, separators=";")
    if fenced and group.status == "complete":
        kind, _, after = next_literal(text, group.end, ("```",), ctx)
        return (
            Group("partial", calls=group.calls)
            if kind == "partial"
            else Group("complete", after, group.calls)
        )
    return group


def dropped(marker: str) -> Reader:
    """A structural token outside any call (gpt-oss's message ends): removed."""
    return lambda text, i, ctx: Group("complete", i + len(marker))


def minimax_call(text: str, i: int, ctx: Ctx) -> Result:
    """MiniMax-M2 ``<invoke name="NAME"><parameter name="KEY">VALUE</parameter>...</invoke>``."""
    return xml_function(text, i, ctx, MINIMAX_XML)
