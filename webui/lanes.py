"""Lanes: several generations in progress at once on the one model worker thread.

A model that decodes several sequences in one batch (llama.cpp with `parallel` slots) needs every running
request to reach its next decode before the batch can run. Each request runs in its own greenlet (a lane)
on the model worker thread. When its sequence needs the model (a prompt chunk, the next token) it *parks*:
it hands what it needs to the model's `Stepper` and switches back to the hub. Once every lane is parked,
the hub asks the stepper for one step (one llama_decode holding every lane's tokens) and resumes the lanes
that step completed, each of which reads its own logits before the next step runs. Only the worker thread
runs model code, so llama.cpp's compute threads stay one team (`webui.model_worker`), and every switch is
explicit: the model needs no locks.

A model whose lanes never park (every loader except llama.cpp with parallel > 1) runs each lane from its
start to its end before the next, exactly as one request after another.

greenlet (the library gevent and SQLAlchemy build on) gives the switches; it is used here without any
monkey-patching: nothing switches except `park` and the hub.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from greenlet import getcurrent, greenlet

log = logging.getLogger(__name__)


class Lane:
    """One request (or one API request's prompts, in order) in progress."""

    def __init__(self, body: Callable[[], None], hub_glet: greenlet):
        self.glet = _LaneGreenlet(body, parent=hub_glet)
        self.glet.lane = self
        #: What the lane waits for while parked (the stepper's own object), None while it runs.
        self.parked: Any = None
        #: The stepper's state for this lane (llama.cpp: the sequence it holds).
        self.data: dict[str, Any] = {}

    @property
    def done(self) -> bool:
        return self.glet.dead


class _LaneGreenlet(greenlet):
    lane: Lane


class Stepper(Protocol):
    """The model side of batching: advances parked lanes together."""

    def step(self, lanes: Sequence[Lane]) -> list[tuple[Lane, Any, BaseException | None]]:
        """Run one step for the parked `lanes` (every live lane is parked); return the lanes it completed,
        each with the value `park` returns to it, or the error it raises there."""

    def release(self, lane: Lane) -> None:
        """`lane` ended: what it held is free."""


def current() -> Lane | None:
    """The lane running now, or None outside every lane."""
    return getattr(getcurrent(), "lane", None)


def park(wanted: Any) -> Any:
    """From inside a lane: wait for the hub's next step to complete `wanted` (the stepper's object); return
    what the step gives back, or raise its error."""
    lane = current()
    if lane is None:
        raise RuntimeError("park() outside a lane")
    lane.parked = wanted
    return lane.glet.parent.switch()


def run_lanes(admit: Callable[[], Callable[[], None] | None], capacity: int,
              stepper: Callable[[], Stepper | None]) -> None:
    """Run lanes on this thread until none is left and `admit` gives no more: at most `capacity` at once.

    `admit()` returns the body of the next lane (a callable that must not raise) or None; it is asked
    before every step, so a waiting request starts as soon as a lane is free, one step later at most.
    `stepper()` is the model's `Stepper` (asked when a lane parks)."""
    hub = getcurrent()
    lanes: list[Lane] = []
    while True:
        lanes = _drop_ended(lanes, stepper)
        while len(lanes) < max(1, capacity) and (body := admit()) is not None:
            lane = Lane(body, hub)
            lanes.append(lane)
            _enter(lane, lane.glet.switch)
            lanes = _drop_ended(lanes, stepper)
        if not lanes:
            return
        model_stepper = stepper()
        if model_stepper is None:  # a lane parked on a model that cannot step: end it with the error
            for lane in lanes:
                _enter(lane, lambda lane=lane: lane.glet.throw(RuntimeError("the model cannot batch requests")))
            continue
        try:
            resumed = model_stepper.step(lanes)
        except Exception as exc:  # noqa: BLE001 - a failed step ends the lanes that waited on it, not the worker
            log.exception("a batched step failed")
            resumed = [(lane, None, exc) for lane in lanes]
        for lane, value, error in resumed:
            lane.parked = None
            if error is not None:
                _enter(lane, lambda lane=lane, error=error: lane.glet.throw(error))
            else:
                _enter(lane, lambda lane=lane, value=value: lane.glet.switch(value))


def _enter(lane: Lane, switch: Callable[[], Any]) -> None:
    """Run `lane` until it parks or ends."""
    try:
        switch()
    except BaseException:  # a lane body must not raise; if one does, the others go on
        log.exception("a generation lane failed")


def _drop_ended(lanes: list[Lane], stepper: Callable[[], Stepper | None]) -> list[Lane]:
    live = [lane for lane in lanes if not lane.done]
    if len(live) < len(lanes):
        model_stepper = stepper()
        for lane in lanes:
            if lane.done and model_stepper is not None:
                model_stepper.release(lane)
    return live
