"""The Training tab's "Train LoRA" sub-tab: dataset pickers, the training parameters (widgets generated from
`TrainingParams`), the memory estimate, Start/Stop, and while a job runs a live loss plot with steps/s and
ETA, polled by a timer.

The job belongs to the App (`app.jobs`), not to the browser session: a reloaded page shows the running
training when the tab is opened, and Stop still reaches it. Mistakes are one error toast naming the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.dataset_files import datasets_dir
from webui.errors import HearthError
from webui.jobs import JobStatus, format_seconds
from webui.training import TRAINING_JOB, start_training
from webui.training.config import training_specs
from webui.training.datasets import formats_dir, list_datasets, list_formats
from webui.training.memory import describe as describe_memory
from webui.training.trainer import estimate
from webui.ui.context import UIContext, enclosing_tabs
from webui.ui.param_widgets import widget_for
from webui.ui.streaming import toasts

if TYPE_CHECKING:
    import pandas as pd

    from webui.app import App

POLL_SECONDS = 1.0
PREFIX = "train-"
#: Parameters laid out by hand (pickers) and the groups the rest are shown in, in order.
PICKERS = ("dataset", "eval_dataset", "format")
GROUPS = {
    "LoRA": ("rank", "alpha", "dropout", "target_modules"),
    "Optimizer": (
        "learning_rate",
        "scheduler",
        "warmup_steps",
        "epochs",
        "micro_batch_size",
        "gradient_accumulation",
    ),
    "Data": ("cutoff_len", "overlap_len", "train_on_inputs"),
    "Run": (
        "gradient_checkpointing",
        "save_every",
        "eval_every",
        "stop_at_loss",
        "resume_from",
        "overwrite",
        "seed",
    ),
}
#: Settings that change the memory estimate.
MEMORY_FIELDS = (
    "rank",
    "dropout",
    "target_modules",
    "micro_batch_size",
    "cutoff_len",
    "gradient_checkpointing",
)
INTRO = (
    "Train a LoRA adapter on the model loaded in the Model tab (Transformers loader) with a dataset of "
    "`user_data/training/datasets/`; it is saved to `loras/NAME/`. **While training runs the model is busy: "
    "generation in the other tabs waits until it ends or you press Stop** (Stop saves the adapter so far). "
    "Memory: full fine-tuning takes about 4x the model's memory (weights, gradients, two optimizer states); "
    "LoRA trains a small fraction of the weights, so it needs far less: the estimate below is for these "
    "settings. See docs/training.md."
)


def describe(status: JobStatus | None) -> str:
    """Progress (running) or outcome (finished) of the training job, as Markdown."""
    if status is None:
        return "No training has run since Hearth started."
    if status.running:
        if not status.total:
            return f"**Starting**: {status.message}"
        loss = status.metrics.get("loss")
        figures = [
            f"step {status.done} / {status.total}",
            f"loss {loss:.4f}" if loss is not None else "",
            f"{status.metrics.get('steps_per_s', status.rate):.2f} steps/s",
            f"ETA {format_seconds(status.eta)}",
        ]
        if "eval_loss" in status.metrics:
            figures.append(f"eval loss {status.metrics['eval_loss']:.4f}")
        return "**Training** (generation waits)  \n" + " · ".join(f for f in figures if f)
    took = format_seconds(status.elapsed)
    if status.state == "failed":
        return f"**Failed** after {took}: {status.error}"
    word = "Stopped" if status.state == "cancelled" else "Done"
    return f"**{word}** in {took}: {status.message}"


def loss_frame(status: JobStatus | None) -> pd.DataFrame:
    """The job's history as long rows (step, value, series) for the loss plot."""
    import pandas as pd

    rows = [
        {"step": row["step"], "value": row[key], "series": key}
        for row in (status.history if status is not None else [])
        for key in ("loss", "eval_loss")
        if key in row
    ]
    frame = pd.DataFrame(rows, columns=["step", "value", "series"])
    return frame.astype({"step": float, "value": float, "series": str})  # typed even when empty


def plot_value(status: JobStatus | None) -> pd.DataFrame | None:
    """What the plot shows: None while there is no point (Gradio draws no line into a colour domain fixed
    by an empty frame)."""
    frame = loss_frame(status)
    return None if frame.empty else frame


def _status(app: App) -> JobStatus | None:
    job = app.jobs.get(TRAINING_JOB)
    return job.status() if job is not None else None


def build_train_panel(ctx: UIContext) -> None:
    app = ctx.app
    specs = training_specs()
    data_dir = datasets_dir(app.settings.user_data_dir)
    fmt_choices = ["auto", "raw", "chat", *list_formats(formats_dir(app.settings.templates_dir))]
    gr.Markdown(INTRO)
    widgets: dict[str, Any] = {}
    with gr.Row():
        widgets["name"] = widget_for(specs["name"], elem_prefix=PREFIX, label="Adapter name")
        widgets["dataset"] = gr.Dropdown(
            list_datasets(data_dir),
            value=None,
            label="Dataset",
            info=specs["dataset"].help,
            elem_id=f"{PREFIX}dataset",
        )
        widgets["eval_dataset"] = gr.Dropdown(
            [("none", ""), *list_datasets(data_dir)],
            value="",
            label="Evaluation dataset",
            info=specs["eval_dataset"].help,
            elem_id=f"{PREFIX}eval_dataset",
        )
        widgets["format"] = gr.Dropdown(
            fmt_choices, value="auto", label="Format", info=specs["format"].help, elem_id=f"{PREFIX}format"
        )
        refresh = gr.Button("Refresh lists", elem_id=f"{PREFIX}refresh", scale=0)
    for title, names in GROUPS.items():
        with gr.Accordion(title, open=title != "Run"), gr.Row():
            for name in names:
                widgets[name] = widget_for(specs[name], elem_prefix=PREFIX)
    memory = gr.Markdown("Load a Transformers model to see the memory estimate.", elem_id=f"{PREFIX}memory")
    with gr.Row():
        check = gr.Button("Estimate memory", elem_id=f"{PREFIX}estimate")
        start = gr.Button("Start training", variant="primary", elem_id=f"{PREFIX}start")
        stop = gr.Button("Stop", variant="stop", elem_id=f"{PREFIX}stop")
    progress = gr.Markdown(lambda: describe(_status(app)), elem_id=f"{PREFIX}status")
    plot = gr.LinePlot(
        None, x="step", y="value", color="series", label="Loss", elem_id=f"{PREFIX}loss-plot", height=360
    )
    timer = gr.Timer(POLL_SECONDS, active=False)
    order = list(widgets)
    inputs = [widgets[name] for name in order]

    def values(*args: Any) -> dict[str, Any]:
        return {
            name: ("" if value is None and name in PICKERS else value)
            for name, value in zip(order, args, strict=True)
        }

    def show_memory(*args: Any) -> str:
        try:
            return describe_memory(estimate(app, values(*args)))
        except HearthError as exc:
            return f"Memory estimate: {exc}"

    def refresh_lists(chosen: str | None, chosen_eval: str | None) -> tuple[Any, Any]:
        names = list_datasets(data_dir)
        return (
            gr.Dropdown(choices=names, value=chosen if chosen in names else None),
            gr.Dropdown(choices=[("none", ""), *names], value=chosen_eval if chosen_eval in names else ""),
        )

    def begin(*args: Any) -> tuple[str, Any, Any, Any]:
        with toasts():
            job = start_training(app, values(*args))
        status = job.status()
        return describe(status), plot_value(status), gr.Timer(active=True), show_memory(*args)

    def poll() -> tuple[str, Any, Any]:
        status = _status(app)
        running = status is not None and status.running
        if status is not None and status.state == "failed" and not running:
            gr.Warning(f"training failed: {status.error}")
        return describe(status), plot_value(status), gr.Timer(active=running)

    def halt() -> str:
        if app.jobs.stop(TRAINING_JOB):
            return "**Stopping** after the current step; the adapter so far is saved…"
        return describe(_status(app))

    def opened(*args: Any) -> tuple[str, Any, Any, str]:
        status = _status(app)
        running = status is not None and status.running
        return describe(status), plot_value(status), gr.Timer(active=running), show_memory(*args)

    refresh.click(
        refresh_lists,
        [widgets["dataset"], widgets["eval_dataset"]],
        [widgets["dataset"], widgets["eval_dataset"]],
        show_progress="hidden",
    )
    check.click(show_memory, inputs, memory, show_progress="hidden")
    for name in MEMORY_FIELDS:
        widgets[name].change(show_memory, inputs, memory, show_progress="hidden")
    start.click(begin, inputs, [progress, plot, timer, memory])
    stop.click(halt, None, progress, show_progress="hidden")
    timer.tick(poll, None, [progress, plot, timer], show_progress="hidden")
    for tab in enclosing_tabs(progress):  # a job started elsewhere (CLI-less: another browser), a reload
        tab.select(opened, inputs, [progress, plot, timer, memory], show_progress="hidden")
