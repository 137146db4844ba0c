"""The Training tab's "Perplexity evaluation" sub-tab: models, dataset and windows in; a job runs
(`webui.evaluation`), polled by a timer while it runs; results from ``user_data/logs/evaluations.csv``.

The job belongs to the App, not to the browser session: a reloaded page shows the running job's progress
and Stop still reaches it. A mistake in the form is one error toast naming the field; a model that fails
during the run is reported in the progress text and one warning toast, and the run goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.evaluation import EVALUATION_JOB, EvaluationRequest, list_datasets, read_results, start_evaluation
from webui.jobs import JobStatus, format_seconds
from webui.ui.context import UIContext
from webui.ui.streaming import toasts

if TYPE_CHECKING:
    from webui.app import App

POLL_SECONDS = 1.0
NO_REFERENCE = ""


def _model_names(app: App) -> list[str]:
    return [m.name for m in app.models.list_models()]


def _table(app: App) -> Any:
    import pandas as pd

    columns, rows = read_results(app.settings.user_data_dir)
    return pd.DataFrame(rows, columns=columns)


def _whole(value: Any, label: str) -> int:
    if value is None or value == "" or float(value) != int(float(value)):
        raise gr.Error(f"{label}: enter a whole number", print_exception=False)
    return int(float(value))


def describe(status: JobStatus | None) -> str:
    """The progress line (running) or the outcome (finished) of the evaluation job, as Markdown."""
    if status is None:
        return "No evaluation has run since Hearth started."
    if status.running:
        figures = [
            f"{status.done} / {status.total or '?'} tokens",
            f"{status.rate:.0f} tokens/s",
            f"ETA {format_seconds(status.eta)}",
        ]
        if "perplexity" in status.metrics:
            figures.append(f"perplexity so far {status.metrics['perplexity']:.4f}")
        if "kl_divergence" in status.metrics:
            figures.append(f"KL {status.metrics['kl_divergence']:.5f}")
        return f"**Running** {status.message}  \n" + " · ".join(figures)
    took = format_seconds(status.elapsed)
    if status.state == "failed":
        return f"**Failed** after {took}: {status.error}"
    if status.state == "cancelled":
        return f"**Stopped** after {took}; models finished before Stop are in the table."
    lines = [f"**Done** in {took}: {status.message}."]
    outcome = status.result
    lines += [f"- error: {e}" for e in getattr(outcome, "errors", [])]
    lines += [f"- note: {n}" for n in getattr(outcome, "notices", [])]
    return "  \n".join(lines)


def build_evaluation_panel(ctx: UIContext) -> None:
    app = ctx.app
    user_data = app.settings.user_data_dir
    gr.Markdown(
        "Perplexity of one or several models on a text file of `user_data/training/datasets/`, each "
        "loaded in turn with its saved settings (the model loaded now is measured as it is, and is "
        "loaded again at the end). With a reference model, each model's KL divergence from it too: "
        "what a quant costs against its original. See docs/evaluation.md."
    )
    with gr.Row():
        models = gr.Dropdown(
            _model_names(app), multiselect=True, label="Models", elem_id="eval-models", scale=4
        )
        dataset = gr.Dropdown(
            list_datasets(user_data),
            value=None,
            label="Dataset",
            elem_id="eval-dataset",
            info="A .txt file in user_data/training/datasets/",
            scale=3,
        )
        refresh = gr.Button("Refresh lists", elem_id="eval-refresh", scale=1)
    with gr.Row():
        stride = gr.Number(
            512,
            precision=0,
            minimum=1,
            label="Stride",
            elem_id="eval-stride",
            info="Tokens between window starts; each token is scored once.",
        )
        max_length = gr.Number(
            2048,
            precision=0,
            minimum=2,
            label="max_length",
            elem_id="eval-max-length",
            info="Tokens per window (at most the model's context).",
        )
        reference = gr.Dropdown(
            [("none", NO_REFERENCE), *_model_names(app)],
            value=NO_REFERENCE,
            label="Reference model (KL divergence, optional)",
            elem_id="eval-reference",
        )
    comment = gr.Textbox(label="Comment", elem_id="eval-comment", placeholder="Saved with the results")
    with gr.Row():
        start = gr.Button("Start evaluation", variant="primary", elem_id="eval-start")
        stop = gr.Button("Stop", variant="stop", elem_id="eval-stop")
    progress = gr.Markdown(lambda: describe(_status(app)), elem_id="eval-progress")
    table = gr.Dataframe(
        lambda: _table(app),
        label="Results (user_data/logs/evaluations.csv, newest first)",
        interactive=False,
        wrap=False,
        elem_id="eval-results",
    )
    timer = gr.Timer(POLL_SECONDS, active=False)

    def refresh_lists(chosen: list[str] | None, ref: str | None) -> tuple[Any, Any, Any]:
        names = _model_names(app)
        return (
            gr.Dropdown(choices=names, value=[n for n in chosen or [] if n in names]),
            gr.Dropdown(choices=list_datasets(user_data)),
            gr.Dropdown(
                choices=[("none", NO_REFERENCE), *names], value=ref if ref in names else NO_REFERENCE
            ),
        )

    def begin(
        chosen: list[str] | None,
        data: str | None,
        stride_value: Any,
        length_value: Any,
        ref: str | None,
        note: str,
    ) -> tuple[str, Any]:
        request = EvaluationRequest(
            tuple(chosen or ()),
            data or "",
            _whole(stride_value, "Stride"),
            _whole(length_value, "max_length"),
            ref or NO_REFERENCE,
            (note or "").strip(),
        )
        with toasts():
            job = start_evaluation(app, request)
        return describe(job.status()), gr.Timer(active=True)

    def poll() -> tuple[str, Any, Any]:
        status = _status(app)
        if status is not None and status.running:
            return describe(status), gr.skip(), gr.skip()
        if status is not None and status.state == "failed":
            gr.Warning(f"evaluation failed: {status.error}")
        elif status is not None and getattr(status.result, "errors", None):
            gr.Warning("; ".join(status.result.errors))
        return describe(status), _table(app), gr.Timer(active=False)

    def halt() -> str:
        return (
            "**Stopping** after the current window…"
            if app.jobs.stop(EVALUATION_JOB)
            else describe(_status(app))
        )

    refresh.click(refresh_lists, [models, reference], [models, dataset, reference], show_progress="hidden")
    start.click(begin, [models, dataset, stride, max_length, reference, comment], [progress, timer])
    timer.tick(poll, None, [progress, table, timer], show_progress="hidden")
    stop.click(halt, None, progress, show_progress="hidden")


def _status(app: App) -> JobStatus | None:
    job = app.jobs.get(EVALUATION_JOB)
    return job.status() if job is not None else None
