"""A first-come, first-served lock: requests for the one loaded model run in the order they arrived.

`threading.Lock` makes no ordering promise, so a stream of API requests could starve an early one.
"""

from __future__ import annotations

import threading
from collections import deque


class FifoLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()
        self._owner: object | None = None
        self._owner_thread: int | None = None
        self._depth = 0

    def acquire(self, cancel: threading.Event | None = None, poll: float = 0.05) -> bool:
        """Wait for our turn; return False (without the lock) if `cancel` is set while waiting.

        Re-entrant for the thread that holds it, so a loader may be swapped from inside a held section.
        """
        me = threading.get_ident()
        ticket = object()
        with self._cond:
            if self._owner is not None and self._owner_thread == me:
                self._depth += 1
                return True
            self._queue.append(ticket)
            while self._owner is not None or self._queue[0] is not ticket:
                if cancel is not None and cancel.is_set():
                    self._queue.remove(ticket)
                    self._cond.notify_all()
                    return False
                self._cond.wait(poll if cancel is not None else None)
            self._queue.popleft()
            self._owner, self._owner_thread, self._depth = ticket, me, 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._owner_thread != threading.get_ident():
                raise RuntimeError("release of a FifoLock not held by this thread")
            self._depth -= 1
            if self._depth == 0:
                self._owner = self._owner_thread = None
                self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Requests queued behind the running one."""
        with self._cond:
            return len(self._queue)

    def __enter__(self) -> FifoLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
