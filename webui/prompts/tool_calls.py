"""Tool calls in a model's reply: which format a model writes them in, and reading them out, whole or streamed.

Every family writes calls its own way (``<tool_call>{json}</tool_call>`` for Hermes and Qwen,
``[TOOL_CALLS]`` for Mistral, DeepSeek's ``<｜tool▁call▁begin｜>`` tokens, gpt-oss's commentary channel,
...). `detect_tool_format` picks one from the chat template; `parse_tool_calls` reads a whole reply into
content and calls; `ToolCallStreamer` does the same while the reply streams, as OpenAI's incremental
``tool_calls`` deltas, and ends with exactly what `parse_tool_calls` gives for the same text. Parse the
answer after the reasoning was split off (``webui.prompts.reasoning``).

Text that only looks like a call but does not parse stays content. A call is passed on once its name is
known and its arguments have started; from then on it is never withdrawn: a call the model does not finish
is closed where it stopped (its arguments completed into a valid JSON object).

Forced calls (``tool_choice`` required or a named function) are constrained by a grammar made from
`call_frame` and `call_schema`, which `parse_tool_calls` reads back. Formats without a JSON call object
(DeepSeek, Kimi K2, MiniMax, gpt-oss) have no frame: constrain them with the Hermes frame, which every
format's reader except `ToolCallFormat.JSON` also accepts.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from webui.prompts import tool_call_syntax as syn
from webui.prompts import tool_call_tokens as tok
from webui.prompts.partial_json import Memo
from webui.prompts.reasoning import marker_prefix_length
from webui.prompts.tool_call_syntax import Call, Ctx, Group, Reader


class ToolCallFormat(str, Enum):
    """How a model family writes tool calls."""

    HERMES = "hermes"  # <tool_call>{"name", "arguments"}</tool_call>: Hermes, Qwen2.5/3, Granite 4, ...
    QWEN3_CODER = "qwen3_coder"  # <tool_call><function=NAME><parameter=KEY>...: Qwen3-Coder/3.5, Nemotron 3
    GLM = "glm"  # <tool_call>NAME<arg_key>KEY</arg_key><arg_value>...: GLM-4.5+, Ling 3, Laguna
    SEED_OSS = "seed_oss"  # <seed:tool_call><function=NAME>...: ByteDance Seed-OSS
    LLAMA3 = "llama3"  # {"name", "parameters"} (optionally after <|python_tag|>): Llama 3.1-3.3
    MISTRAL = "mistral"  # [TOOL_CALLS][{...}] or [TOOL_CALLS]NAME[ARGS]{...}
    DEEPSEEK = "deepseek"  # <｜tool▁calls▁begin｜>...: DeepSeek V3, R1, V3.1
    KIMI_K2 = "kimi_k2"  # <|tool_calls_section_begin|>...: Kimi K2
    HARMONY = "harmony"  # <|channel|>commentary to=functions.NAME ...<|message|>{...}: gpt-oss
    GRANITE = "granite"  # <|tool_call|>[{...}]: Granite 3.x
    MINIMAX = "minimax"  # <minimax:tool_call><invoke name="NAME"><parameter name="KEY">...: MiniMax-M2
    COMMAND_R = "command_r"  # <|START_ACTION|>[{"tool_name", "parameters"}]<|END_ACTION|>: Command R7B, A
    JSON = "json"  # a reply that is only {"name", "arguments"} (or a list of them)


@dataclass(frozen=True)
class ToolCall:
    """One call, as OpenAI's ``tool_calls`` entries: `arguments` is a JSON object's text."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ContentDelta:
    """Answer text."""

    text: str


@dataclass(frozen=True)
class CallStartDelta:
    """A new call: OpenAI's first ``tool_calls`` delta of it (id, type, function name)."""

    index: int
    id: str
    name: str

    def to_openai(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": ""},
        }


@dataclass(frozen=True)
class ArgumentsDelta:
    """More of a call's arguments text (OpenAI's ``function.arguments`` delta)."""

    index: int
    text: str

    def to_openai(self) -> dict[str, Any]:
        return {"index": self.index, "function": {"arguments": self.text}}


StreamDelta = ContentDelta | CallStartDelta | ArgumentsDelta


@dataclass(frozen=True)
class _Spec:
    markers: tuple[tuple[str, Reader], ...]
    #: Reader for a call at the very start of the reply with no marker, and the characters it starts with.
    bare: Reader | None = None
    bare_starts: str = ""

    @property
    def longest_marker(self) -> int:
        return max((len(m) for m, _ in self.markers), default=0)


_HERMES_MARKERS = ((syn.HERMES_OPEN, syn.tagged(syn.HERMES_OPEN, syn.HERMES_CLOSE)),)
_DEEPSEEK = tok.section(
    tok.DS_CALLS_BEGIN, tok.DS_CALL_BEGIN, tok.DS_CALL_END, tok.DS_CALLS_END, tok.deepseek_call
)
_KIMI = tok.section(
    tok.KIMI_SECTION_BEGIN, tok.KIMI_CALL_BEGIN, tok.KIMI_CALL_END, tok.KIMI_SECTION_END, tok.kimi_call
)
_MINIMAX = tok.section(
    tok.MINIMAX_OPEN, tok.MINIMAX_XML.open, tok.MINIMAX_XML.close, tok.MINIMAX_CLOSE, tok.minimax_call
)
_SPECS: dict[ToolCallFormat, _Spec] = {
    ToolCallFormat.HERMES: _Spec(
        (*_HERMES_MARKERS, (tok.TOOL_CALLS_OPEN, tok.json_after(tok.TOOL_CALLS_OPEN, tok.TOOL_CALLS_CLOSE))),
        tok.plain_json,
        "{[`",
    ),
    ToolCallFormat.QWEN3_CODER: _Spec((*_HERMES_MARKERS, (syn.FUNCTION_OPEN, syn.bare_function))),
    ToolCallFormat.GLM: _Spec(_HERMES_MARKERS),
    ToolCallFormat.SEED_OSS: _Spec(
        ((syn.SEED_OPEN, syn.tagged(syn.SEED_OPEN, syn.SEED_CLOSE)), *_HERMES_MARKERS)
    ),
    ToolCallFormat.LLAMA3: _Spec(
        (
            (tok.PYTHON_TAG, tok.json_after(tok.PYTHON_TAG)),
            (syn.FUNCTION_OPEN, syn.bare_function),
            *_HERMES_MARKERS,
        ),
        tok.plain_json,
        "{",
    ),
    ToolCallFormat.MISTRAL: _Spec(((tok.MISTRAL_CALLS, tok.mistral), *_HERMES_MARKERS)),
    ToolCallFormat.DEEPSEEK: _Spec(
        ((tok.DS_CALLS_BEGIN, _DEEPSEEK), (tok.DS_CALL_BEGIN, _DEEPSEEK), *_HERMES_MARKERS)
    ),
    ToolCallFormat.KIMI_K2: _Spec(
        ((tok.KIMI_SECTION_BEGIN, _KIMI), (tok.KIMI_CALL_BEGIN, _KIMI), *_HERMES_MARKERS)
    ),
    ToolCallFormat.HARMONY: _Spec(
        (
            (tok.HARMONY_START, tok.harmony),
            (tok.HARMONY_CHANNEL, tok.harmony),
            *((m, tok.dropped(m)) for m in tok.HARMONY_DROPPED),
            *_HERMES_MARKERS,
        )
    ),
    ToolCallFormat.GRANITE: _Spec(((tok.GRANITE_CALL, tok.json_after(tok.GRANITE_CALL)), *_HERMES_MARKERS)),
    ToolCallFormat.MINIMAX: _Spec(((tok.MINIMAX_OPEN, _MINIMAX), *_HERMES_MARKERS)),
    ToolCallFormat.COMMAND_R: _Spec(
        ((tok.COMMAND_R_OPEN, tok.json_after(tok.COMMAND_R_OPEN, tok.COMMAND_R_CLOSE)), *_HERMES_MARKERS)
    ),
    ToolCallFormat.JSON: _Spec((), tok.plain_json, "{[`"),
}

# (prefix, suffix, separator) around each JSON call object; see `call_frame`.
_FRAMES: dict[ToolCallFormat, tuple[str, str, str]] = {
    ToolCallFormat.HERMES: ("<tool_call>\n", "\n</tool_call>", "\n"),
    ToolCallFormat.QWEN3_CODER: ("<tool_call>\n", "\n</tool_call>", "\n"),
    ToolCallFormat.GLM: ("<tool_call>\n", "\n</tool_call>", "\n"),
    ToolCallFormat.SEED_OSS: ("<seed:tool_call>\n", "\n</seed:tool_call>", "\n"),
    ToolCallFormat.LLAMA3: ("", "", "; "),
    ToolCallFormat.MISTRAL: ("[TOOL_CALLS][", "]", ""),
    ToolCallFormat.GRANITE: ("<|tool_call|>[", "]", ""),
    ToolCallFormat.COMMAND_R: ("<|START_ACTION|>[", "]<|END_ACTION|>", ""),
    ToolCallFormat.JSON: ("", "", "\n"),
}


def detect_tool_format(template_text: str | None) -> ToolCallFormat:
    """The tool-call format a chat template teaches its model; Hermes when it shows none (Hearth's generic
    tool prompt, ``webui.prompts.tool_prompt``, asks for Hermes, and the Hermes reader also takes a reply
    that is only a JSON call)."""
    t = template_text or ""
    checks = (
        (ToolCallFormat.HARMONY, ("<|channel|>", "to=")),
        (ToolCallFormat.KIMI_K2, (tok.KIMI_SECTION_BEGIN,)),
        (ToolCallFormat.DEEPSEEK, ("tool▁call▁begin",)),
        (ToolCallFormat.DEEPSEEK, ("tool▁calls▁begin",)),
        (ToolCallFormat.MISTRAL, (tok.MISTRAL_CALLS,)),
        (ToolCallFormat.MINIMAX, (tok.MINIMAX_OPEN,)),
        (ToolCallFormat.COMMAND_R, (tok.COMMAND_R_OPEN,)),
        (ToolCallFormat.SEED_OSS, (syn.SEED_OPEN,)),
        (ToolCallFormat.GLM, (syn.HERMES_OPEN, syn.ARG_KEY)),
        (ToolCallFormat.QWEN3_CODER, (syn.HERMES_OPEN, syn.FUNCTION_OPEN, syn.PARAMETER_OPEN)),
        (ToolCallFormat.HERMES, (syn.HERMES_OPEN,)),
        (ToolCallFormat.HERMES, (tok.TOOL_CALLS_OPEN,)),
        (ToolCallFormat.GRANITE, (tok.GRANITE_CALL,)),
        (ToolCallFormat.LLAMA3, (tok.PYTHON_TAG,)),
        (ToolCallFormat.LLAMA3, ('"parameters": dictionary',)),
    )
    for fmt, needles in checks:
        if all(n in t for n in needles):
            return fmt
    return ToolCallFormat.HERMES


def call_frame(fmt: ToolCallFormat) -> tuple[str, str, str] | None:
    """(prefix, suffix, separator): forced calls are written ``prefix CALL suffix`` joined by `separator`,
    CALL being a JSON object that matches `call_schema`. None for formats whose calls are not a JSON
    object with the name inside (DeepSeek, Kimi K2, MiniMax, gpt-oss): use `call_frame(ToolCallFormat.HERMES)`
    with that format's own parser."""
    return _FRAMES.get(fmt)


def call_schema(
    fmt: ToolCallFormat, tools: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> dict[str, Any]:
    """JSON schema of one call object for `fmt`: ``{"name": <one of names>, "arguments": <its parameters>}``
    (``parameters`` for Llama 3; ``tool_name`` and ``parameters`` for Command R), the name first. `tools`
    are OpenAI tool entries; every name must be one of them."""
    name_key = "tool_name" if fmt == ToolCallFormat.COMMAND_R else "name"
    key = "parameters" if fmt in (ToolCallFormat.LLAMA3, ToolCallFormat.COMMAND_R) else "arguments"
    by_name = {t["function"]["name"]: t["function"] for t in tools if isinstance(t.get("function"), Mapping)}
    options = []
    for name in names:
        if name not in by_name:
            raise ValueError(f"no tool named {name!r} in tools")
        params = by_name[name].get("parameters") or {"type": "object", "properties": {}}
        options.append(
            {
                "type": "object",
                "properties": {name_key: {"const": name}, key: dict(params)},
                "required": [name_key, key],
                "additionalProperties": False,
            }
        )
    if not options:
        raise ValueError("no function to call")
    return options[0] if len(options) == 1 else {"anyOf": options}


def new_call_id() -> str:
    """An OpenAI-style call id: ``call_`` and 24 random letters and digits."""
    alphabet = string.ascii_letters + string.digits
    return "call_" + "".join(secrets.choice(alphabet) for _ in range(24))


def _ctx(
    names: Collection[str] | None,
    tools: Sequence[Mapping[str, Any]] | None,
    final: bool,
    memo: Memo | None = None,
) -> Ctx:
    schemas = {}
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            schemas[function["name"]] = function.get("parameters") or {}
    if names is None and tools:
        names = schemas.keys()
    return Ctx(frozenset(names) if names is not None else None, schemas, final, memo)


_START, _NORMAL, _AFTER_CALL = range(3)


@dataclass
class _Parsed:
    items: list[str | Call]
    #: (position, mode, items before it): where parsing may resume with everything before it final.
    restart: tuple[int, int, int] | None


def _settle(group: Group, final: bool, length: int) -> Group:
    """A group the reply ended inside: its calls closed where they stopped, or none (then it is text)."""
    if not final or group.status != "partial":
        return group
    if not group.calls:
        return Group("failed")
    for call in group.calls:
        call.args, call.heal = call.args + call.heal, ""
    return Group("complete", length, group.calls)


def _parse(text: str, spec: _Spec, ctx: Ctx, mode: int) -> _Parsed:
    """Read `text` (from a point where the parser was in `mode`) into content and calls. Unless final,
    text whose meaning is still open (a possible marker, trailing whitespace, an unfinished call) is left
    out of the items or reported only as far as it is settled."""
    items: list[str | Call] = []
    restart = None
    pos = search = 0
    markers = [m for m, _ in spec.markers]
    readers = dict(spec.markers)
    while True:
        if mode != _NORMAL:
            j = syn.ws(text, pos)
            if j >= len(text):
                break
            pos = search = j
            if mode == _START and spec.bare is not None and text[j] in spec.bare_starts:
                group = _settle(spec.bare(text, j, ctx), ctx.final, len(text))
                if group.status == "partial":
                    items.extend(group.calls)
                    break
                if group.status == "complete" and group.calls:
                    items.extend(group.calls)
                    pos = search = group.end
                    mode, restart = _AFTER_CALL, (pos, _AFTER_CALL, len(items))
                    continue
                search = j + 1
            mode = _NORMAL
        hits = [(at, m) for m in markers if (at := text.find(m, search)) >= 0]
        if not hits:
            tail = text[max(search, len(text) - spec.longest_marker) :]
            end = len(text) if ctx.final else len(text) - marker_prefix_length(tail, markers)
            content = text[pos:end] if ctx.final else text[pos:end].rstrip()
            if content:
                items.append(content)
                restart = (pos + len(content), _NORMAL, len(items))
            break
        at, marker = min(hits)
        group = _settle(readers[marker](text, at, ctx), ctx.final, len(text))
        if group.status == "failed":
            search = at + 1
            continue
        before = text[pos:at]
        if group.status == "partial" or group.calls:
            before = before.rstrip()
        if before:
            items.append(before)
        if group.status == "partial":
            if before:
                restart = (pos + len(before), _NORMAL, len(items))
            items.extend(group.calls)
            break
        items.extend(group.calls)
        pos = search = group.end
        mode = _AFTER_CALL if group.calls else _NORMAL
        restart = (pos, mode, len(items))
    return _Parsed(items, restart)


def parse_tool_calls(
    text: str,
    fmt: ToolCallFormat,
    tool_names: Collection[str] | None = None,
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[str, list[ToolCall]]:
    """(content, calls) of a whole reply. `tool_names`: only calls to these count (others stay content);
    `tools` (OpenAI tool entries) give the parameter types of XML-style arguments, and the names when
    `tool_names` is None. Ids are the model's where it wrote one, else new (`new_call_id`)."""
    parsed = _parse(text, _SPECS[fmt], _ctx(tool_names, tools, final=True), _START)
    content = "".join(item for item in parsed.items if isinstance(item, str))
    calls = [
        ToolCall(item.id or new_call_id(), item.name, item.args)
        for item in parsed.items
        if isinstance(item, Call)
    ]
    return content, calls


class ToolCallStreamer:
    """Read calls from a streamed reply: `feed` each chunk, then `finish`; each returns the deltas it
    completes. Text that may begin a call is held back until it is clear. The concatenated deltas equal
    `parse_tool_calls` of the whole text (content, names, arguments; a streamed call's id is fixed when
    it starts, so an id the model writes after the arguments is only in the whole-reply parse)."""

    def __init__(
        self,
        fmt: ToolCallFormat,
        tool_names: Collection[str] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ):
        self._spec = _SPECS[fmt]
        self._names, self._tools = tool_names, tools
        self._text = ""
        self._mode = _START
        self._window: list[int] = []  # per item since the restart point: chars sent, or the call's index
        self._calls: list[ToolCall] = []
        self._content: list[str] = []
        self._memo: Memo = {}

    @property
    def content(self) -> str:
        """All content text sent so far."""
        return "".join(self._content)

    @property
    def calls(self) -> list[ToolCall]:
        """The calls sent so far, with the arguments sent so far."""
        return list(self._calls)

    def feed(self, text: str) -> list[StreamDelta]:
        """Add a chunk of the reply."""
        self._text += text
        return self._update(final=False)

    def finish(self) -> list[StreamDelta]:
        """The reply ended: release held text and close an unfinished call."""
        return self._update(final=True)

    def _update(self, final: bool) -> list[StreamDelta]:
        parsed = _parse(self._text, self._spec, _ctx(self._names, self._tools, final, self._memo), self._mode)
        deltas: list[StreamDelta] = []
        for k, item in enumerate(parsed.items):
            if k == len(self._window):
                if isinstance(item, str):
                    self._window.append(0)
                else:
                    self._window.append(len(self._calls))
                    self._calls.append(ToolCall(item.id or new_call_id(), item.name, ""))
                    deltas.append(CallStartDelta(self._window[k], self._calls[-1].id, item.name))
            if isinstance(item, str):
                new = item[self._window[k] :]
                if new:
                    self._window[k] = len(item)
                    self._content.append(new)
                    deltas.append(ContentDelta(new))
            else:
                index = self._window[k]
                call = self._calls[index]
                new = item.args[len(call.arguments) :]
                if new:
                    self._calls[index] = ToolCall(call.id, call.name, call.arguments + new)
                    deltas.append(ArgumentsDelta(index, new))
        if parsed.restart is not None:
            pos, self._mode, done = parsed.restart
            self._text = self._text[pos:]
            del self._window[:done]
            if pos:
                self._memo.clear()
        return deltas
