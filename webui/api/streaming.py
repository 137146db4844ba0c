"""Bridging the generation core to asyncio, SSE, and client disconnects.

`GenerationCore.start` queues a generation behind earlier ones and hands each event, on the model's worker
thread, to the request's `EventPump`, which passes it to the event loop (no thread per request, no relay
hop per token: on a small CPU every wake-up is taken from the model's compute threads). The consumer takes
every event already waiting in one go, so a fast model is not slowed to the speed of one network write
per token.

A client that goes away sets the request's cancel event: a queued request leaves the queue, a running one
stops at its next token, and the model is free for the next request at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from webui.api.errors import APIError, error_body, from_hearth
from webui.errors import HearthError
from webui.events import Event, Finished

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.1
#: Shortest time between two writes of a stream: tokens arriving faster go out together. Each write wakes
#: the server and the client, and on a small CPU every wake-up is taken from the model's compute threads;
#: 50 writes a second are still smooth to read.
WRITE_INTERVAL_S = 0.02
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: Seconds between the `: loading NAME` comments a stream sends while its model loads (keeps proxies and
#: clients from timing out; SSE comments are ignored by every client).
KEEPALIVE_S = 3.0
T = TypeVar("T")


class Renderer(Protocol):
    """Turns core events into one endpoint's OpenAI shapes."""

    def stream(self, event: Event) -> list[BaseModel]:
        """The chunks (none, one or several) that `event` streams as, in order."""

    def whole(self, events: list[Event]) -> BaseModel:
        """The non-streamed response: every event of the request, each choice's ending in its Finished."""


Sink = Callable[[object], None]


class EventPump:
    """`start(cancel, sink)` begins a generation whose events arrive through `sink` on another thread;
    `batches()` yields them, in order, on the event loop as they arrive, until the `expected`-th Finished
    (one per generation the request started).

    The sink wakes the event loop only when the consumer is waiting: while it is busy writing, new
    events just pile up and go out together (one wake-up per batch, not per token)."""

    def __init__(self, start: Callable[[threading.Event, Sink], None], expected: int = 1):
        self.cancel = threading.Event()
        self._expected = expected
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._items: list[object] = []
        self._waiting = False
        self._wakeup = asyncio.Event()
        start(self.cancel, self._put)

    def _put(self, item: object) -> None:
        with self._lock:
            self._items.append(item)
            wake, self._waiting = self._waiting, False
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._wakeup.set)
            except RuntimeError:  # the event loop is gone (server shutting down): stop generating
                self.cancel.set()

    async def _take(self) -> list[object]:
        while True:
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    return items
                self._waiting = True
                self._wakeup.clear()
            await self._wakeup.wait()

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Batches of events ending with the one holding the last Finished; a generation's exception is raised."""
        finished = 0
        while True:
            events: list[Event] = []
            for item in await self._take():
                if isinstance(item, BaseException):
                    if events:
                        yield events
                    raise item
                events.append(item)  # type: ignore[arg-type]
                if isinstance(item, Finished):
                    finished += 1
                    if finished == self._expected:
                        yield events
                        return
            yield events


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


async def _until_first(request: Request, pump: EventPump, batches: AsyncIterator[list[Event]]) -> list[Event]:
    """The first batch, cancelling the generation if the client leaves while it waits in the queue."""
    watcher = asyncio.create_task(_watch_disconnect(request, pump.cancel))
    try:
        return await anext(batches, [])
    except BaseException:
        pump.cancel.set()
        raise
    finally:
        watcher.cancel()


async def collect(request: Request, pump: EventPump, renderer: Renderer) -> BaseModel:
    """The whole reply as one response (non-streaming)."""
    watcher = asyncio.create_task(_watch_disconnect(request, pump.cancel))
    events: list[Event] = []
    try:
        async for batch in pump.batches():
            events.extend(batch)
    finally:
        pump.cancel.set()  # a no-op after Finished; stops the generation if this coroutine was cancelled
        watcher.cancel()
    for event in events:
        if isinstance(event, Finished) and event.extension_errors:
            raise extension_error(event)
    if not events or not isinstance(events[-1], Finished):
        raise APIError(500, "the generation ended without a final event")  # pragma: no cover
    return renderer.whole(events)


def extension_error(done: Finished) -> APIError:
    """An extension's logits processor failed: the reply was generated without it, so the client is told
    (non-streaming: this error instead of the reply; streaming: an error event before [DONE])."""
    return APIError(500, "; ".join(done.extension_errors), code="extension_error")


def _sse(model: BaseModel) -> str:
    return f"data: {model.model_dump_json()}\n\n"


def _render(batch: list[Event], renderer: Renderer) -> str:
    parts = []
    for event in batch:
        parts += [_sse(model) for model in renderer.stream(event)]
        if isinstance(event, Finished) and event.extension_errors:
            error = extension_error(event)
            parts.append(f"data: {_json(error_body(error.message, error.type, error.param, error.code))}\n\n")
    return "".join(parts)


async def _sse_body(first: list[Event], batches: AsyncIterator[list[Event]], renderer: Renderer,
                    cancel: threading.Event) -> AsyncIterator[str]:
    try:
        yield _render(first, renderer)
        loop = asyncio.get_running_loop()
        written = loop.time()
        async for batch in batches:
            text = _render(batch, renderer)
            if not text:
                continue
            yield text
            if not isinstance(batch[-1], Finished):
                await asyncio.sleep(max(0.0, written + WRITE_INTERVAL_S - loop.time()))
            written = loop.time()
    except Exception as exc:
        yield _error_event(exc)
    finally:
        cancel.set()  # the client left (this generator was cancelled) or the reply is done
    yield "data: [DONE]\n\n"


def _error_event(exc: Exception) -> str:
    """A failure inside a stream, as the error body OpenAI clients read from a `data:` line."""
    if isinstance(exc, HearthError):
        exc = from_hearth(exc)
    if not isinstance(exc, APIError):
        log.error("streamed generation failed", exc_info=exc)
        exc = APIError(500, f"internal error: {exc}")
    return f"data: {_json(error_body(exc.message, exc.type, exc.param, exc.code))}\n\n"


def while_loading(name: str, ready: Awaitable[T], then: Callable[[T], Awaitable[Any]],
                  done: Callable[[T], None]) -> StreamingResponse:
    """A stream that answers 200 at once while model `name` loads (`ready` gives its slot): an SSE comment
    `: loading NAME` now and every KEEPALIVE_S, then the stream `then(slot)` returns (`done(slot)` once
    it has started). A failed load or request arrives as an error event and `[DONE]`."""

    async def body() -> AsyncIterator[str]:
        task = asyncio.ensure_future(ready)
        taken = False
        try:
            yield f": loading {name}\n\n"
            while not task.done():
                await asyncio.wait({task}, timeout=KEEPALIVE_S)
                if not task.done():
                    yield f": loading {name}\n\n"
            slot = task.result()
            taken = True
            try:
                response = await then(slot)
            finally:
                done(slot)
        except Exception as exc:
            yield _error_event(exc)
            yield "data: [DONE]\n\n"
            return
        finally:
            if not taken:  # the client left while the model loaded: hand the slot back once it has
                task.add_done_callback(lambda t: None if t.cancelled() or t.exception() else done(t.result()))
        if isinstance(response, StreamingResponse):
            chunks = response.body_iterator
            try:
                async for chunk in chunks:
                    yield chunk if isinstance(chunk, str) else bytes(chunk).decode("utf-8")
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]  # a client that left cancels the generation
        else:  # pragma: no cover - `then` streams
            yield _sse(response) + "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


def _json(data: object) -> str:
    return json.dumps(data, ensure_ascii=False)


async def stream(request: Request, pump: EventPump, renderer: Renderer) -> StreamingResponse:
    """Server-sent events: `data: {chunk}` lines, then `data: [DONE]`.

    Waits for the first event before answering, so an error found before any token (bad prompt ids,
    an unsupported setting) still gets its proper status code instead of a 200 stream."""
    batches = pump.batches()
    first = await _until_first(request, pump, batches)
    return StreamingResponse(_sse_body(first, batches, renderer, pump.cancel), media_type="text/event-stream",
                             headers=SSE_HEADERS)


async def respond(request: Request, start: Callable[[threading.Event, Sink], None], renderer: Renderer,
                  streaming: bool, expected: int = 1) -> BaseModel | StreamingResponse:
    """Run the generations started by `start(cancel, sink)` (see `GenerationCore.start_many`; `expected` of
    them, one after another) as the reply."""
    pump = EventPump(start, expected)
    return await (stream(request, pump, renderer) if streaming else collect(request, pump, renderer))
