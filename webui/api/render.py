"""Core events -> OpenAI response shapes, for completions and chat completions.

A renderer is made per request; it keeps the ids and offsets that tie a streamed reply together.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from webui.api.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatTokenLogprob,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    TopLogprob,
    Usage,
)
from webui.api.tool_schemas import FunctionCall, FunctionCallDelta, ToolCall, ToolCallDelta
from webui.events import Event, Finished, PromptRead, TextChunk, TokenLogprob
from webui.prompts.tool_calls import CallStartDelta, ContentDelta
from webui.reply_parts import Piece, ReasoningDelta, ReplyShape

if TYPE_CHECKING:
    from webui.chat_service import ReplyPlan


def finish_reason(done: Finished) -> str:
    """OpenAI knows 'stop' and 'length'; a cancelled reply (stop-generation) ended by request: 'stop'."""
    return "length" if done.reason == "length" else "stop"


def usage(done: Finished) -> Usage:
    return Usage(prompt_tokens=done.usage.prompt_tokens, completion_tokens=done.usage.completion_tokens,
                 total_tokens=done.usage.total_tokens)


def per_choice(events: list[Event]) -> list[list[Event]]:
    """Events of choices run one after another, split after each Finished."""
    groups: list[list[Event]] = [[]]
    for event in events:
        groups[-1].append(event)
        if isinstance(event, Finished):
            groups.append([])
    return groups[:-1]


class _Choice:
    """One choice of a completion: its echoed prompt and where its next token starts in its text."""

    def __init__(self, index: int, echo: str):
        self.index, self.echo, self.offset, self.started = index, echo, 0, False


class CompletionRenderer:
    """Legacy completion shapes for choices run one after another (choice k ends with the k-th Finished).

    `echoes[k]` is choice k's echoed prompt ("" without echo); a PromptRead (echo with logprobs) leads its
    logprobs. `n` samples per prompt: usage counts each prompt's tokens once and every choice's completion,
    as OpenAI and vLLM do; streamed, the last choice's final chunk carries it."""

    def __init__(self, model: str, echoes: list[str], logprobs: int | None = None, n: int = 1):
        self.id, self.created, self.model = f"cmpl-{uuid.uuid4().hex}", int(time.time()), model
        self.want_logprobs, self.top_n, self.n = logprobs is not None, logprobs or 0, n
        self._choices = [_Choice(i, echo) for i, echo in enumerate(echoes)]
        self._done = 0
        self._usage = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)

    def _response(self, choice: _Choice, text: str, reason: str | None = None,
                  logprobs: CompletionLogprobs | None = None, used: Usage | None = None) -> CompletionResponse:
        item = CompletionChoice(index=choice.index, text=text, finish_reason=reason, logprobs=logprobs)  # type: ignore[arg-type]
        return CompletionResponse(id=self.id, created=self.created, model=self.model, choices=[item], usage=used)

    def _logprobs(self, choice: _Choice, items: list[TokenLogprob]) -> CompletionLogprobs | None:
        if not self.want_logprobs:
            return None
        out = CompletionLogprobs()
        for item in items:
            out.tokens.append(item.text)
            out.token_logprobs.append(item.logprob)
            top: dict[str, float] | None = None
            if item.logprob is not None:  # a first prompt token has nothing to be scored against
                top = {}
                for _, text, logprob in item.top[: self.top_n]:
                    top.setdefault(text, logprob)
            out.top_logprobs.append(top)
            out.text_offset.append(choice.offset)
            choice.offset += len(item.text)
        return out

    def _begin(self, choice: _Choice, prompt: PromptRead | None) -> CompletionLogprobs | None:
        """The echo's logprobs; generated tokens then start where the echoed text ends."""
        choice.started = True
        logprobs = self._logprobs(choice, prompt.logprobs) if prompt is not None else None
        choice.offset = len(choice.echo)
        return logprobs

    def _count(self, done: Finished) -> None:
        if self._done % self.n == 0:
            self._usage.prompt_tokens += done.usage.prompt_tokens
        self._usage.completion_tokens += done.usage.completion_tokens
        self._usage.total_tokens = self._usage.prompt_tokens + self._usage.completion_tokens
        self._done += 1

    def stream(self, event: Event) -> list[CompletionResponse]:
        """The chunks one event streams as: a choice's echo first, its final chunk last."""
        choice, out = self._choices[self._done], []
        if not choice.started:
            prompt = event if isinstance(event, PromptRead) else None
            logprobs = self._begin(choice, prompt)
            if choice.echo or logprobs is not None:
                out.append(self._response(choice, choice.echo, logprobs=logprobs))
        if isinstance(event, Finished):
            self._count(event)
            last = self._done == len(self._choices)
            out.append(self._response(choice, "", finish_reason(event), used=self._usage if last else None))
        elif isinstance(event, TextChunk) and (event.text or event.logprobs):
            out.append(self._response(choice, event.text, logprobs=self._logprobs(choice, event.logprobs)))
        return out

    def whole(self, events: list[Event]) -> CompletionResponse:
        items = []
        for choice, group in zip(self._choices, per_choice(events), strict=False):
            done = group[-1]
            assert isinstance(done, Finished)
            prompt = next((e for e in group if isinstance(e, PromptRead)), None)
            logprobs = _joined(self._begin(choice, prompt),
                               self._logprobs(choice, [lp for e in group if isinstance(e, TextChunk) for lp in e.logprobs]))
            self._count(done)
            items.append(CompletionChoice(index=choice.index, text=choice.echo + done.text,
                                          finish_reason=finish_reason(done), logprobs=logprobs))  # type: ignore[arg-type]
        return CompletionResponse(id=self.id, created=self.created, model=self.model, choices=items, usage=self._usage)


def _joined(first: CompletionLogprobs | None, second: CompletionLogprobs | None) -> CompletionLogprobs | None:
    if first is None or second is None:
        return first or second
    return CompletionLogprobs(tokens=first.tokens + second.tokens,
                              token_logprobs=first.token_logprobs + second.token_logprobs,
                              top_logprobs=first.top_logprobs + second.top_logprobs,
                              text_offset=first.text_offset + second.text_offset)


def _token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


class ChatRenderer:
    """Chat completion shapes for a planned reply (see `ChatService.plan_reply`).

    The reply splits by the plan's `ReplyShape`: reasoning as `reasoning_content`, the answer as `content`,
    tool calls as `tool_calls` (streamed as OpenAI's incremental deltas: a call's id and name first, then
    pieces of its arguments). An extension's bot prefix starts the answer: it is the first streamed content.
    A continued message (continue_) is answered with the new text only. `finish` (the output modifier)
    shapes the whole answer of a non-streamed response; streamed deltas are the model's text, as
    text-generation-webui's."""

    def __init__(self, model: str, top_logprobs: int | None = None, *, plan: ReplyPlan | None = None,
                 finish: Callable[[ReplyPlan, str], str] | None = None):
        self.id, self.created, self.model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model
        self.top_n = top_logprobs
        self.plan, self.finish = plan, finish
        self.prefix = plan.prefix if plan is not None and not plan.continue_last else ""
        self.shape = plan.shape if plan is not None else ReplyShape()
        self._parts = self.shape.streamer()
        self._started = False

    def _content(self, generated: str) -> str:
        if self.plan is None or self.finish is None:
            return generated
        reply = self.finish(self.plan, generated)
        if self.plan.continue_last:
            return reply[len(self.plan.prefix):] if reply.startswith(self.plan.prefix) else generated
        return reply

    def _logprobs(self, items: list[TokenLogprob]) -> ChatLogprobs | None:
        if self.top_n is None:
            return None
        return ChatLogprobs(content=[
            ChatTokenLogprob(
                token=item.text, logprob=item.logprob, bytes=_token_bytes(item.text),
                top_logprobs=[TopLogprob(token=t, logprob=lp, bytes=_token_bytes(t)) for _, t, lp in item.top[: self.top_n]],
            )
            for item in items
        ])

    def _chunk(self, delta: ChatDelta, reason: str | None = None, logprobs: ChatLogprobs | None = None,
               used: Usage | None = None) -> ChatCompletionChunk:
        choice = ChatChunkChoice(delta=delta, finish_reason=reason, logprobs=logprobs)  # type: ignore[arg-type]
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[choice], usage=used)

    def _finish_reason(self, done: Finished, calls: int) -> str:
        return "tool_calls" if calls and done.reason == "stop" else finish_reason(done)

    def stream(self, event: Event) -> list[ChatCompletionChunk]:
        """The chunks one event streams as; the first event is preceded by the role (and prefix) chunks.
        An event's logprobs ride on its first chunk (an empty content delta when its text is held back)."""
        out = []
        if not self._started:
            self._started = True
            out.append(self._chunk(ChatDelta(role="assistant", content="")))
            if self.prefix:
                out.append(self._chunk(ChatDelta(content=self.prefix)))
        if isinstance(event, Finished):
            out += [self._chunk(delta) for delta in _deltas(self._parts.finish())]
            out.append(self._chunk(ChatDelta(), self._finish_reason(event, self._parts.calls), used=usage(event)))
        elif isinstance(event, TextChunk) and (event.text or event.logprobs):
            deltas = _deltas(self._parts.feed(event.text))
            logprobs = self._logprobs(event.logprobs) if event.logprobs else None
            if logprobs is not None and not deltas:
                deltas = [ChatDelta(content="")]
            out += [self._chunk(delta, logprobs=logprobs if i == 0 else None) for i, delta in enumerate(deltas)]
        return out

    def whole(self, events: list[Event]) -> ChatCompletionResponse:
        done = events[-1]
        assert isinstance(done, Finished)
        logprobs = self._logprobs([lp for e in events if isinstance(e, TextChunk) for lp in e.logprobs])
        parts = self.shape.split(done.text)
        content = self._content(parts.content)
        calls = [ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in parts.tool_calls]
        message = AssistantMessage(content=None if calls and not content.strip() else content,
                                   reasoning_content=parts.reasoning or None, tool_calls=calls or None)
        choice = ChatChoice(message=message, finish_reason=self._finish_reason(done, len(calls)),  # type: ignore[arg-type]
                            logprobs=logprobs)
        return ChatCompletionResponse(id=self.id, created=self.created, model=self.model, choices=[choice],
                                      usage=usage(done))


def _deltas(pieces: list[Piece]) -> list[ChatDelta]:
    """Reply pieces as chat deltas; consecutive text of one kind is merged into one delta."""
    out: list[ChatDelta] = []
    for piece in pieces:
        if isinstance(piece, ReasoningDelta):
            if out and out[-1].reasoning_content is not None and out[-1].tool_calls is None:
                out[-1].reasoning_content += piece.text
            else:
                out.append(ChatDelta(reasoning_content=piece.text))
        elif isinstance(piece, ContentDelta):
            if out and out[-1].content is not None and out[-1].tool_calls is None:
                out[-1].content += piece.text
            else:
                out.append(ChatDelta(content=piece.text))
        elif isinstance(piece, CallStartDelta):
            out.append(ChatDelta(tool_calls=[ToolCallDelta(index=piece.index, id=piece.id, type="function",
                                                           function=FunctionCallDelta(name=piece.name, arguments=""))]))
        else:
            out.append(ChatDelta(tool_calls=[ToolCallDelta(index=piece.index,
                                                           function=FunctionCallDelta(arguments=piece.text))]))
    return out
