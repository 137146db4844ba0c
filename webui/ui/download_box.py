"""The Model tab's download box: user/repo[:branch] -> list files -> pick a GGUF quant -> download.

A vision model's GGUF repo also holds a multimodal projector (mmproj): the box offers it with the quant
(a ticked checkbox naming the file), as llama-server's ``-hf`` does; both land in one folder, where the
llama.cpp loader's ``mmproj auto`` finds it.

Listing and transfers are `webui.hub` / `webui.download`; this renders their progress events as a bar
(bytes, speed, ETA) and wires Cancel to the download's cancel event. One download per browser session:
the cancel events are kept by session hash, so two people downloading do not cancel each other.
"""

from __future__ import annotations

import html
import queue
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from webui.app import App
from webui.download import ProgressEvent, download, human_bytes
from webui.hub import HubError, list_repo

Progress = ProgressEvent | BaseException | str  # a str is the finished model's name


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def progress_html(event: ProgressEvent) -> str:
    """A bar for the whole download plus the current file's bytes, speed and ETA."""
    percent = 100 * event.fraction
    return (
        f'<div id="download-progress" data-fraction="{event.fraction:.4f}">'
        f'<div class="hearth-membar"><span class="w" style="width:{percent:.1f}%"></span></div>'
        f"{percent:.1f}% — {human_bytes(event.overall_downloaded)} of {human_bytes(event.overall_total)}"
        f" — {human_bytes(event.speed)}/s — ETA {_eta(event.eta)}"
        f"<br><small>file {event.file_index}/{event.file_count}: {html.escape(event.filename)}</small></div>"
    )


def quant_choices(spec: str) -> tuple[list[tuple[str, str]], str, str | None]:
    """Dropdown choices (label with size, quant label), a summary line for a repo, and the label of the
    projector (mmproj) that comes with a quant (None when the repo has none)."""
    listing = list_repo(spec)
    choices = [
        (f"{label} — {human_bytes(sum(f.size for f in files))} — {files[0].path}", label)
        for label, files in listing.quantizations().items()
    ]
    summary = (
        f"{listing.repo.repo_id} @ {listing.commit[:10]}: {listing.kind} repo, {len(listing.files)} files"
    )
    if listing.kind == "gguf":
        summary += f"; {len(choices)} GGUF quantizations — pick one"
    projector = listing.projector if listing.kind == "gguf" else None
    if projector is not None:
        summary += "; a vision model: its projector comes with the quant"
        return choices, summary, f"With its projector for images: {projector.path} ({human_bytes(projector.size)})"
    return choices, summary, None


class DownloadBox:
    """The handlers; the cancel events of running downloads are kept by browser session."""

    def __init__(self, app: App):
        self.app = app
        self._cancels: dict[str, threading.Event] = {}

    def list_files(self, spec: str) -> tuple[Any, str, Any]:
        try:
            choices, summary, projector = quant_choices(spec)
        except HubError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        value = choices[0][1] if len(choices) == 1 else None
        mmproj = gr.update(visible=True, value=True, label=projector) if projector else gr.update(visible=False, value=True)
        return gr.update(choices=choices, value=value, visible=bool(choices)), summary, mmproj

    def start(self, spec: str, quant: str | None, with_mmproj: bool, request: gr.Request) -> Iterator[tuple[str, Any]]:
        """Run the download in a thread and stream its progress; the last yield names the new model."""
        cancel = threading.Event()
        self._cancels[request.session_hash or ""] = cancel
        events: queue.Queue[Progress] = queue.Queue()

        def run() -> None:
            try:
                path = download(
                    spec,
                    self.app.settings.models_dir,
                    select=quant or None,
                    on_progress=events.put,
                    cancel=cancel,
                    loras_dir=self.app.settings.loras_dir,
                    mmproj=bool(with_mmproj),
                )
                # a LoRA adapter repo lands in the LoRA folder: the model list has nothing new to select
                events.put(f"LoRA {path.name}" if path.parent == self.app.settings.loras_dir else path.name)
            except BaseException as exc:  # reported to the page, never lost in the thread
                events.put(exc)

        threading.Thread(target=run, name="hearth-download", daemon=True).start()
        yield '<div id="download-progress">Starting…</div>', gr.update()
        while True:
            item = events.get()
            if isinstance(item, ProgressEvent):
                yield progress_html(item), gr.update()
            elif isinstance(item, str) and item.startswith("LoRA "):
                note = "into the LoRA folder: pick it under LoRA adapters (Refresh)"
                yield f'<div id="download-progress">Downloaded <b>{html.escape(item)}</b> {note}</div>', gr.update()
                return
            elif isinstance(item, str):
                yield f'<div id="download-progress">Downloaded <b>{html.escape(item)}</b></div>', item
                return
            else:
                message = str(item) if isinstance(item, HubError) else f"download failed: {item!r}"
                gr.Warning(message)
                yield f'<div id="download-progress">{html.escape(message)}</div>', gr.update()
                return

    def cancel(self, request: gr.Request) -> None:
        event = self._cancels.pop(request.session_hash or "", None)
        if event is not None:
            event.set()


def build_download_box(app: App) -> gr.Textbox:
    """The accordion. Returns a hidden textbox that takes the downloaded model's name when one finishes
    (the Model tab listens to its change to refresh and select the model)."""
    box = DownloadBox(app)
    with gr.Accordion("Download a model from Hugging Face", open=False, elem_id="download-box"):
        with gr.Row():
            spec = gr.Textbox(
                label="Repository",
                placeholder="user/repo or user/repo:branch",
                scale=3,
                elem_id="download-repo",
            )
            list_button = gr.Button("List files", scale=1)
        summary = gr.Markdown()
        quant = gr.Dropdown(
            label="File (GGUF quantization)", choices=[], visible=False, elem_id="download-quant"
        )
        mmproj = gr.Checkbox(label="With its projector for images", value=True, visible=False, elem_id="download-mmproj")
        with gr.Row():
            start = gr.Button("Download", variant="primary", elem_id="download-start")
            stop = gr.Button("Cancel", elem_id="download-cancel")
        progress = gr.HTML()
        finished = gr.Textbox(visible=False)
    list_button.click(box.list_files, [spec], [quant, summary, mmproj])
    spec.submit(box.list_files, [spec], [quant, summary, mmproj])
    start.click(box.start, [spec, quant, mmproj], [progress, finished], concurrency_limit=None)
    stop.click(box.cancel, None, None, queue=False)
    return finished
