"""The Training tab's Perplexity evaluation sub-tab: its progress text, and in a real browser: a mistake is
one toast naming the field, and an evaluation started from the form ends with its row in the table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.model_factory import CORPUS
from webui.evaluation.results import EvaluationResult
from webui.evaluation.runner import EvaluationOutcome
from webui.jobs import JobStatus
from webui.ui.evaluation_panel import describe

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
GGUF = "tiny-llama.gguf"


def test_progress_text_shows_rate_eta_and_the_outcome() -> None:
    assert "No evaluation" in describe(None)
    running = JobStatus(
        "evaluation",
        "running",
        done=300,
        total=900,
        message="m: window 3/9",
        elapsed=3.0,
        metrics={"perplexity": 12.5, "kl_divergence": 0.01234},
    )
    text = describe(running)
    assert "m: window 3/9" in text and "300 / 900 tokens" in text and "100 tokens/s" in text
    assert "ETA 6s" in text and "perplexity so far 12.5000" in text and "KL 0.01234" in text
    outcome = EvaluationOutcome(
        [EvaluationResult("m", "l", "q", "", "d", 10, 2.0, 1, 2, "now")],
        ["bad.gguf: not a GGUF"],
        ["m: max_length clamped"],
    )
    done = describe(
        JobStatus("evaluation", "done", message="1 model(s) evaluated, 1 failed", elapsed=65, result=outcome)
    )
    assert done.startswith("**Done** in 1m 05s") and "- error: bad.gguf: not a GGUF" in done
    assert "- note: m: max_length clamped" in done
    assert "**Stopped**" in describe(JobStatus("evaluation", "cancelled"))
    assert "boom" in describe(JobStatus("evaluation", "failed", error="boom"))


def choose(page: Any, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")


def set_number(page: Any, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


@pytest.mark.browser
def test_evaluation_started_in_the_tab_adds_its_row(page: Any, ui_server: UIServer) -> None:
    datasets = ui_server.app.settings.user_data_dir / "training" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "corpus.txt").write_text(CORPUS * 2, encoding="utf-8")  # after the page was built: Refresh
    page.get_by_role("tab", name="Training").click()
    page.get_by_role("tab", name="Perplexity evaluation").click()
    page.locator("#eval-refresh").click()
    choose(page, "eval-models", GGUF)
    choose(page, "eval-dataset", "corpus.txt")
    set_number(page, "eval-stride", 256)
    set_number(page, "eval-max-length", 128)
    page.locator("#eval-start").click()
    toast = page.locator(
        ".toast-body.error", has_text="stride (256) must not be larger than max_length (128)"
    )
    toast.wait_for()
    assert page.locator(".toast-body.error").count() == 1
    assert page.locator("#eval-stride input[type=number]").input_value() == "256"  # what was typed stays

    set_number(page, "eval-stride", 64)
    page.locator("#eval-comment textarea, #eval-comment input").first.fill("from the tab")
    page.locator("#eval-start").click()
    page.locator("#eval-progress", has_text="Done").wait_for()
    row = page.locator("#eval-results", has_text="from the tab")
    row.wait_for()
    text = row.inner_text()
    assert GGUF in text and "corpus.txt" in text and "llama.cpp" in text
    ui_server.shot(page, "evaluation-done")
    assert ui_server.app.models.model is None  # nothing was loaded before: nothing stays loaded
