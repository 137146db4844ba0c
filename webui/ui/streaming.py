"""Running the generation core from Gradio generator callbacks: Stop buttons, throttling, error toasts.

A Stop button is its own (unqueued) event, so it cannot reach into the generator that is streaming. Each
tab keeps a `CancelBoard`: the streaming callback registers a `threading.Event` under the browser
session's id, and Stop sets it; the core sees the event at the next token and finishes with
``reason="cancelled"``, so the callback still renders (and the chat service still saves) the partial text.
Gradio's own ``cancels=`` would kill the generator instead and lose that last step.

Gradio advances a generator callback one step at a time on whichever worker thread is free. That is safe:
the core runs the generation on its model worker and only relays events, and closing the callback's
generator (the page went away) closes the core's stream, which cancels the generation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import gradio as gr

from webui.errors import HearthError
from webui.events import Finished, TokenLogprob
from webui.generation import GenerationCore, GenerationRequest

T = TypeVar("T")

#: Seconds between UI updates while streaming; intermediate states are skipped, the last one never is.
UPDATE_INTERVAL = 0.05


def session_key(request: gr.Request | None) -> str:
    """One browser tab's id (Gradio's session hash); tests calling callbacks directly share one key."""
    return str(getattr(request, "session_hash", None) or "local")


class CancelBoard:
    """The running generations of one UI tab, by browser session, so Stop cancels only its own."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @contextmanager
    def running(self, request: gr.Request | None) -> Iterator[threading.Event]:
        """The cancel event for a generation that lasts as long as the `with` block."""
        key, event = session_key(request), threading.Event()
        with self._lock:
            self._events[key] = event
        try:
            yield event
        finally:
            event.set()  # a closed generator (page left) must not keep the core running
            with self._lock:
                if self._events.get(key) is event:
                    del self._events[key]

    def busy(self, request: gr.Request | None) -> bool:
        """Whether this browser session has a generation running here (a second one would be refused)."""
        with self._lock:
            return session_key(request) in self._events

    def stop(self, request: gr.Request | None) -> None:
        """Signal this session's running generation, if any (the Stop button's handler: no outputs)."""
        with self._lock:
            event = self._events.get(session_key(request))
        if event is not None:
            event.set()


@contextmanager
def toasts() -> Iterator[None]:
    """Turn Hearth's own errors into one Gradio error toast, without a traceback in the console: they are a
    person's mistakes or the state of things (no model), not bugs. The callback's outputs keep their values
    (the shell hides Gradio's "Error" badge over them, see `webui.ui.CSS`)."""
    try:
        yield
    except HearthError as exc:
        raise gr.Error(str(exc), print_exception=False) from None


def throttle(items: Iterable[T], interval: float = UPDATE_INTERVAL) -> Iterator[T]:
    """Pass on at most one item per `interval`; every item is a full state, so skipping is lossless.

    The last item is always passed on (it carries the finished state)."""
    last, pending, has_pending = 0.0, None, False
    for item in items:
        now = time.monotonic()
        if now - last >= interval:
            last, has_pending = now, False
            yield item
        else:
            pending, has_pending = item, True
    if has_pending:
        yield pending  # type: ignore[misc]


@dataclass
class TextProgress:
    """The generated text so far, its per-token probabilities (when asked for) and, last, the end event."""

    text: str = ""
    tokens: list[TokenLogprob] = field(default_factory=list)
    finished: Finished | None = None


def stream_text(
    core: GenerationCore, request: GenerationRequest, cancel: threading.Event
) -> Iterator[TextProgress]:
    """The core's events folded into cumulative progress steps (each a complete picture, see `throttle`).

    The steps share one growing token list: a step is rendered before the next one is produced."""
    text, tokens = "", []
    for event in core.stream(request, cancel):
        if isinstance(event, Finished):
            yield TextProgress(text, tokens, event)
            return
        text += event.text
        tokens.extend(event.logprobs)
        yield TextProgress(text, tokens)
