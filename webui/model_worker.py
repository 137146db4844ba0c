"""One long-lived thread per generation core runs every model evaluation, in arrival order.

Why a single thread: llama.cpp (built with OpenMP) keeps a team of compute threads per calling thread, and
an idle team spins for a while after its work. When requests arrive on many threads (Gradio workers,
one thread per API request), those teams compete for the cores: measured here, decode fell from 98 to
67 tokens/s on 2 cores. Running all model work on one thread also gives first-come first-served order
for free, and a UI or API thread only relays events.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ModelWorker:
    def __init__(self, name: str = "hearth-model-worker"):
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._name = name
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._pending = 0
        self._count_lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        with self._count_lock:
            return self._pending

    def on_worker(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` on the worker thread after the jobs already submitted. `job` must not raise."""
        self._ensure_started()
        with self._count_lock:  # count and enqueue together, so `pending` never runs ahead of the queue
            self._pending += 1
            self._jobs.put(job)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the worker thread and return its result (or raise its exception)."""
        if self.on_worker():
            return fn()
        done = threading.Event()
        box: dict[str, Any] = {}

        def job() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                box["error"] = exc
            finally:
                done.set()

        self.submit(job)
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop the thread once the jobs already submitted have run (a model that is unloaded for good)."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(_STOP)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            try:
                job()
            finally:
                with self._count_lock:
                    self._pending -= 1


def _STOP() -> None:  # the sentinel `close` queues: the loop returns instead of running it
    """Never called."""
