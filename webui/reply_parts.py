"""A reply's parts: the reasoning, the answer, and tool calls, split from the model's text.

How to split depends on the model (its reasoning markers, its tool-call format) and on the request
(whether the prompt opened a reasoning block, which tools may be called). `ReplyShape` holds that, made
once per reply by the chat service; the Chat tab and the API both split with it, streamed
(`ReplyStreamer`) or whole (`ReplyShape.split`), and get the same parts either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webui.prompts.reasoning import ReasoningFormat, ReasoningSplitter, split_reasoning
from webui.prompts.tool_calls import (
    ArgumentsDelta,
    CallStartDelta,
    ContentDelta,
    StreamDelta,
    ToolCall,
    ToolCallFormat,
    ToolCallStreamer,
    parse_tool_calls,
)


@dataclass(frozen=True)
class ReasoningDelta:
    """More reasoning text."""

    text: str


Piece = ReasoningDelta | ContentDelta | CallStartDelta | ArgumentsDelta


@dataclass(frozen=True)
class ReplyParts:
    reasoning: str
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class ReplyShape:
    """How one reply splits. Without a reasoning format or tools the whole text is the answer."""

    reasoning: ReasoningFormat | None = None
    #: The prompt opened the reasoning block: the reply starts in reasoning.
    inside: bool = False
    #: The tool-call format to read calls in; None: calls are not read (no tools, or tool_choice none).
    tool_format: ToolCallFormat | None = None
    tools: tuple[Mapping[str, Any], ...] = ()

    @property
    def reads_markers(self) -> bool:
        """The reply is split by markers, which may be special tokens: the text must show them."""
        return self.reasoning is not None or self.tool_format is not None

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools if isinstance(t.get("function"), Mapping)]

    def streamer(self) -> ReplyStreamer:
        return ReplyStreamer(self)

    def split(self, text: str) -> ReplyParts:
        """The parts of a whole reply (the same as streaming it and joining the pieces)."""
        reasoning, content = split_reasoning(text, self.reasoning, self.inside) if self.reasoning else ("", text)
        if self.tool_format is None:
            return ReplyParts(reasoning, content)
        content, calls = parse_tool_calls(content, self.tool_format, self.tool_names, tools=list(self.tools))
        return ReplyParts(reasoning, content, calls)


class ReplyStreamer:
    """`feed` each streamed text chunk, then `finish`: each returns the pieces it completes, in order."""

    def __init__(self, shape: ReplyShape):
        self._reasoning = ReasoningSplitter(shape.reasoning, shape.inside) if shape.reasoning else None
        self._calls = (ToolCallStreamer(shape.tool_format, shape.tool_names, tools=list(shape.tools))
                       if shape.tool_format is not None else None)
        self.calls = 0

    def feed(self, text: str) -> list[Piece]:
        if self._reasoning is None:
            return self._answer(text, final=False)
        reasoning, content = self._reasoning.feed(text)
        return self._pieces(reasoning, content, final=False)

    def finish(self) -> list[Piece]:
        if self._reasoning is None:
            return self._answer("", final=True)
        reasoning, content = self._reasoning.flush()
        return self._pieces(reasoning, content, final=True)

    def _pieces(self, reasoning: str, content: str, final: bool) -> list[Piece]:
        out: list[Piece] = [ReasoningDelta(reasoning)] if reasoning else []
        return out + self._answer(content, final)

    def _answer(self, text: str, final: bool) -> list[Piece]:
        if self._calls is None:
            return [ContentDelta(text)] if text else []
        deltas: Sequence[StreamDelta] = self._calls.feed(text) if text else []
        if final:
            deltas = [*deltas, *self._calls.finish()]
        self.calls += sum(isinstance(d, CallStartDelta) for d in deltas)
        return [d for d in deltas if not (isinstance(d, ContentDelta) and not d.text)]
