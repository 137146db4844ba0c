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
from webui.generation import Finished, TextChunk, TokenLogprob

if TYPE_CHECKING:
    from webui.session import ReplyPlan


def finish_reason(done: Finished) -> str:
    """OpenAI knows 'stop' and 'length'; a cancelled reply (stop-generation) ended by request: 'stop'."""
    return "length" if done.reason == "length" else "stop"


def usage(done: Finished) -> Usage:
    return Usage(prompt_tokens=done.usage.prompt_tokens, completion_tokens=done.usage.completion_tokens,
                 total_tokens=done.usage.total_tokens)


class CompletionRenderer:
    """Legacy completion shapes. With echo and logprobs, `prompt` = (text of a first prompt token that has
    no context, or None after a BOS; the later prompt tokens' TokenLogprobs) leads the logprobs."""

    def __init__(self, model: str, echo: str = "", logprobs: int | None = None,
                 prompt: tuple[str | None, list[TokenLogprob]] | None = None):
        self.id, self.created, self.model = f"cmpl-{uuid.uuid4().hex}", int(time.time()), model
        self.echo, self.want_logprobs, self.top_n = echo, logprobs is not None, logprobs or 0
        self._offset = 0
        self._prompt = self._prompt_logprobs(*prompt) if prompt is not None and self.want_logprobs else None
        self._offset = len(echo)

    def _prompt_logprobs(self, first: str | None, entries: list[TokenLogprob]) -> CompletionLogprobs:
        out = CompletionLogprobs()
        if first is not None:  # nothing before it: no probability, as OpenAI reports it
            out.tokens.append(first)
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            out.text_offset.append(0)
            self._offset = len(first)
        return _joined(out, self._logprobs(entries))

    def _response(self, text: str, reason: str | None = None, logprobs: CompletionLogprobs | None = None,
                  used: Usage | None = None) -> CompletionResponse:
        choice = CompletionChoice(text=text, finish_reason=reason, logprobs=logprobs)  # type: ignore[arg-type]
        return CompletionResponse(id=self.id, created=self.created, model=self.model, choices=[choice], usage=used)

    def _logprobs(self, items: list[TokenLogprob]) -> CompletionLogprobs | None:
        if not self.want_logprobs:
            return None
        out = CompletionLogprobs()
        for item in items:
            out.tokens.append(item.text)
            out.token_logprobs.append(item.logprob)
            top: dict[str, float] = {}
            for _, text, logprob in item.top[: self.top_n]:
                top.setdefault(text, logprob)
            out.top_logprobs.append(top)
            out.text_offset.append(self._offset)
            self._offset += len(item.text)
        return out

    def head(self) -> list[CompletionResponse]:
        return [self._response(self.echo, logprobs=self._prompt)] if self.echo else []

    def chunk(self, event: TextChunk) -> CompletionResponse:
        return self._response(event.text, logprobs=self._logprobs(event.logprobs))

    def tail(self, done: Finished) -> CompletionResponse:
        return self._response("", finish_reason(done), used=usage(done))

    def whole(self, chunks: list[TextChunk], done: Finished) -> CompletionResponse:
        logprobs = self._logprobs([lp for c in chunks for lp in c.logprobs])
        if self._prompt is not None and logprobs is not None:
            logprobs = _joined(self._prompt, logprobs)
        return self._response(self.echo + done.text, finish_reason(done), logprobs, usage(done))


def _joined(first: CompletionLogprobs, second: CompletionLogprobs | None) -> CompletionLogprobs:
    if second is None:
        return first
    return CompletionLogprobs(tokens=first.tokens + second.tokens,
                              token_logprobs=first.token_logprobs + second.token_logprobs,
                              top_logprobs=first.top_logprobs + second.top_logprobs,
                              text_offset=first.text_offset + second.text_offset)


def _token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


class ChatRenderer:
    """Chat completion shapes for a planned reply (see `ChatService.plan_reply`).

    An extension's bot prefix starts the reply: it is the first streamed content. A continued message
    (continue_) is answered with the new text only. `finish` (the output modifier) shapes the whole
    reply of a non-streamed response; streamed deltas are the model's text, as text-generation-webui's."""

    def __init__(self, model: str, top_logprobs: int | None = None, *, plan: ReplyPlan | None = None,
                 finish: Callable[[ReplyPlan, str], str] | None = None):
        self.id, self.created, self.model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model
        self.top_n = top_logprobs
        self.plan, self.finish = plan, finish
        self.prefix = plan.prefix if plan is not None and not plan.continue_last else ""

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

    def head(self) -> list[ChatCompletionChunk]:
        head = [self._chunk(ChatDelta(role="assistant", content=""))]
        return head + ([self._chunk(ChatDelta(content=self.prefix))] if self.prefix else [])

    def chunk(self, event: TextChunk) -> ChatCompletionChunk:
        return self._chunk(ChatDelta(content=event.text), logprobs=self._logprobs(event.logprobs))

    def tail(self, done: Finished) -> ChatCompletionChunk:
        return self._chunk(ChatDelta(), finish_reason(done), used=usage(done))

    def whole(self, chunks: list[TextChunk], done: Finished) -> ChatCompletionResponse:
        logprobs = self._logprobs([lp for c in chunks for lp in c.logprobs])
        choice = ChatChoice(message=AssistantMessage(content=self._content(done.text)), finish_reason=finish_reason(done),  # type: ignore[arg-type]
                            logprobs=logprobs)
        return ChatCompletionResponse(id=self.id, created=self.created, model=self.model, choices=[choice],
                                      usage=usage(done))
