"""Long jobs (LoRA training, perplexity evaluation) that run beside the UI: started, watched, stopped.

A job is a function of a `JobContext`: it reports progress (`ctx.report`) and checks `ctx.cancelled` at
safe points (a training step, a window of text). The Training tab and the command line render the same
`JobStatus`; the ETA comes from the measured rate so far, as every progress bar a user trusts does.
A `JobBoard` holds the jobs of one App and runs at most one job of each kind at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from webui.errors import HearthError

log = logging.getLogger(__name__)

#: The kinds of job Hearth runs. Both use the model manager (training holds the loaded model, evaluation
#: loads models in turn), so one waits for the other (`MODEL_JOBS`).
TRAINING_JOB = "training"
EVALUATION_JOB = "evaluation"
MODEL_JOBS = (TRAINING_JOB, EVALUATION_JOB)


class JobCancelled(HearthError):
    """Raised inside a job (by `JobContext.check`) when Stop was pressed; the job ends 'cancelled'."""


class JobBusy(HearthError):
    """A job of that kind is already running."""


@dataclass
class JobStatus:
    """A snapshot of a job, safe to hand to another thread."""

    kind: str
    state: str  # "running", "done", "failed", "cancelled"
    done: int = 0
    total: int = 0
    message: str = ""
    #: Figures the job reports with its progress (loss, perplexity, ...), latest values.
    metrics: dict[str, float] = field(default_factory=dict)
    #: Every report's metrics with its `done`, for plots (a loss curve).
    history: list[dict[str, float]] = field(default_factory=list)
    elapsed: float = 0.0
    error: str | None = None
    result: Any = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def rate(self) -> float:
        """Units of `done` per second so far (0 before the first report)."""
        return self.done / self.elapsed if self.elapsed > 0 and self.done > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None until there is a rate or a total."""
        if not self.running or not self.total or not self.rate:
            return None
        return max(self.total - self.done, 0) / self.rate


def format_seconds(seconds: float | None) -> str:
    """'1h 02m', '3m 05s', '12s'; '?' when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


class JobContext:
    """What a running job sees: report progress, learn whether it was stopped."""

    def __init__(self, job: Job):
        self._job = job

    @property
    def cancelled(self) -> bool:
        return self._job.cancel_event.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        """Set when Stop is pressed: hand it to what waits (FifoLock.acquire) so Stop ends the wait too."""
        return self._job.cancel_event

    def check(self) -> None:
        """Raise JobCancelled when Stop was pressed (call it where stopping is safe)."""
        if self.cancelled:
            raise JobCancelled(f"{self._job.kind} stopped")

    def report(
        self, done: int, total: int | None = None, message: str | None = None, **metrics: float
    ) -> None:
        self._job.update(done, total, message, metrics)


class Job:
    """One run of `work(ctx)` on its own thread."""

    def __init__(self, kind: str, work: Callable[[JobContext], Any]):
        self.kind = kind
        self.cancel_event = threading.Event()
        self._work = work
        self._lock = threading.Lock()
        self._status = JobStatus(kind, "running")
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"hearth-job-{kind}", daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            result = self._work(JobContext(self))
        except JobCancelled:
            self._finish("cancelled")
        except HearthError as exc:
            self._finish("failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported, never takes the app down
            log.exception("%s job failed", self.kind)
            self._finish("failed", error=f"{type(exc).__name__}: {exc}")
        else:
            self._finish("cancelled" if self.cancel_event.is_set() else "done", result=result)

    def _finish(self, state: str, error: str | None = None, result: Any = None) -> None:
        with self._lock:
            self._status.state = state
            self._status.error = error
            self._status.result = result
            self._status.elapsed = time.monotonic() - self._started

    def update(self, done: int, total: int | None, message: str | None, metrics: dict[str, float]) -> None:
        with self._lock:
            status = self._status
            status.done = done
            if total is not None:
                status.total = total
            if message is not None:
                status.message = message
            if metrics:
                status.metrics.update(metrics)
                status.history.append({"step": float(done), **metrics})
            status.elapsed = time.monotonic() - self._started

    def status(self) -> JobStatus:
        with self._lock:
            snapshot = JobStatus(**{**self._status.__dict__})
            snapshot.metrics = dict(snapshot.metrics)
            snapshot.history = list(snapshot.history)
            if snapshot.running:
                snapshot.elapsed = time.monotonic() - self._started
            return snapshot

    def stop(self) -> None:
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> JobStatus:
        self._thread.join(timeout)
        return self.status()


class JobBoard:
    """The App's jobs by kind: at most one running per kind; the last one of each kind is kept to show."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, work: Callable[[JobContext], Any], *, excludes: tuple[str, ...] = ()) -> Job:
        """Start `work` as a `kind` job; JobBusy while a job of `kind` or of a kind in `excludes` runs."""
        with self._lock:
            self._ensure_idle((kind, *excludes))
            job = self._jobs[kind] = Job(kind, work)
        return job.start()

    def ensure_idle(self, *kinds: str) -> None:
        """JobBusy naming the first of `kinds` that has a job running (check before slow preparations)."""
        with self._lock:
            self._ensure_idle(kinds)

    def _ensure_idle(self, kinds: tuple[str, ...]) -> None:
        for kind in kinds:
            current = self._jobs.get(kind)
            if current is not None and current.status().running:
                raise JobBusy(f"a {kind} job is already running: stop it or wait for it to finish")

    def get(self, kind: str) -> Job | None:
        with self._lock:
            return self._jobs.get(kind)

    def stop(self, kind: str) -> bool:
        job = self.get(kind)
        if job is None or not job.status().running:
            return False
        job.stop()
        return True


def follow(
    job: Job,
    on_status: Callable[[JobStatus], None],
    *,
    poll: float = 0.5,
    on_interrupt: Callable[[], None] | None = None,
) -> tuple[JobStatus, bool]:
    """Wait for `job` from a terminal (the CLIs): `on_status` after every poll; Ctrl+C stops the job, which
    still finishes what Stop must (save an adapter, write results). Returns (final status, interrupted)."""
    interrupted = False
    while True:
        try:
            status = job.wait(poll)
        except KeyboardInterrupt:
            interrupted = True
            if on_interrupt is not None:
                on_interrupt()
            job.stop()
            continue
        on_status(status)
        if not status.running:
            return status, interrupted
