"""The job board that runs training and evaluation beside the UI: progress, ETA, stop, failures."""

from __future__ import annotations

import threading

import pytest

from webui.errors import HearthError
from webui.jobs import JobBoard, JobBusy, format_seconds


def test_progress_history_and_result() -> None:
    board = JobBoard()

    def work(ctx):
        for step in range(1, 4):
            ctx.report(step, 3, f"step {step}", loss=1.0 / step)
        return "adapter"

    status = board.start("train", work).wait(10)
    assert status.state == "done" and status.result == "adapter"
    assert (status.done, status.total, status.message) == (3, 3, "step 3")
    assert [row["loss"] for row in status.history] == [1.0, 0.5, 1.0 / 3]
    assert status.eta is None  # finished


def test_stop_ends_cancelled_and_a_second_job_of_a_kind_waits() -> None:
    board = JobBoard()
    started = threading.Event()

    def work(ctx):
        started.set()
        while True:
            ctx.check()
            threading.Event().wait(0.01)

    job = board.start("evaluate", work)
    assert started.wait(10)
    with pytest.raises(JobBusy):
        board.start("evaluate", lambda ctx: None)
    assert board.start("train", lambda ctx: 1).wait(10).state == "done"  # another kind runs beside it
    assert board.stop("evaluate")
    assert job.wait(10).state == "cancelled"
    assert not board.stop("evaluate")  # nothing running now
    assert board.start("evaluate", lambda ctx: 2).wait(10).result == 2


def test_failures_are_reported_not_raised() -> None:
    board = JobBoard()

    def bad_input(ctx):
        raise HearthError("the dataset is empty")

    def bug(ctx):
        raise ValueError("boom")

    assert board.start("a", bad_input).wait(10).error == "the dataset is empty"
    failed = board.start("b", bug).wait(10)
    assert failed.state == "failed" and failed.error == "ValueError: boom"


def test_eta_from_the_rate_so_far() -> None:
    board = JobBoard()
    release = threading.Event()
    reported = threading.Event()

    def work(ctx):
        ctx.report(5, 20)
        reported.set()
        release.wait(10)

    job = board.start("x", work)
    assert reported.wait(10)
    status = job.status()
    assert status.running and status.rate > 0
    assert status.eta == pytest.approx(15 / status.rate)
    release.set()
    job.wait(10)


@pytest.mark.parametrize(("seconds", "text"), [(None, "?"), (12, "12s"), (185, "3m 05s"), (3720, "1h 02m")])
def test_format_seconds(seconds, text) -> None:
    assert format_seconds(seconds) == text
