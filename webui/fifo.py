"""A first-come, first-served lock: the loaded model is used by one job at a time, in arrival order.

`threading.Lock` makes no ordering promise, so a stream of requests could starve an early one. The lock
is not tied to a thread: the generation worker takes it, and a load or unload waits its turn behind it.
"""

from __future__ import annotations

import threading
from collections import deque


class FifoLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()
        self._held = False

    def acquire(self, cancel: threading.Event | None = None, poll: float = 0.05) -> bool:
        """Wait for our turn; return False (without the lock) if `cancel` is set while waiting."""
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while self._held or self._queue[0] is not ticket:
                if cancel is not None and cancel.is_set():
                    self._queue.remove(ticket)
                    self._cond.notify_all()
                    return False
                self._cond.wait(poll if cancel is not None else None)
            self._queue.popleft()
            self._held = True
            return True

    @property
    def waiting(self) -> int:
        """Callers queued for the lock (a load waiting behind generations)."""
        with self._cond:
            return len(self._queue)

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unlocked FifoLock")
            self._held = False
            self._cond.notify_all()


    def __enter__(self) -> FifoLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
