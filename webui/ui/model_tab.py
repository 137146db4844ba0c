"""The Model tab: pick a model and a loader, set the loader's parameters, see the memory estimate,
load/unload, read the model info, save per-model settings, download new models.

Loading, loader choice and per-model settings are `ModelManager` and `webui.model_settings`; the
callbacks here only call them and render. A failed load raises before anything is unloaded (the manager
validates first), so the previous model stays loaded and the status says so; a load that fails after the
old model was freed says so, and the status shows that no model is loaded.

The tab shows the truth, not the start-up values: the status and model info are read when a page opens;
each selection of the tab re-reads the models folder and refreshes them, and when the loaded model is
not the one this page last showed (the first selection in a page, or a load made elsewhere: the API,
another browser tab) the form shows the loaded model with its loader and the parameters it was loaded
with (selecting the loaded model in the list shows those too, where another model shows its saved
settings); otherwise the form keeps what the user chose and typed. (The tab selection, not the page load,
fills the form: Gradio can drop a page-load update to a dropdown in a tab that is not mounted yet.)

Loaders that cannot run on this machine (`Loader.available`, e.g. ExLlamaV2 without CUDA) are not
offered; a line under the loader list names them with the reason.

``trust_remote_code`` is offered only when Hearth was started with --trust-remote-code: otherwise its box
is disabled with the reason, a request that ticks it anyway is refused with a toast, and the model
manager refuses it as well (downloading a repo's Python files is harmless; running them is not).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from webui.app import App
from webui.config import Settings
from webui.errors import HearthError
from webui.loader_api import Loader, ModelInfo
from webui.model_settings import ModelSettings, ModelSettingsError, save_settings, settings_for
from webui.remotes import PREFIX as REMOTE_PREFIX
from webui.ui.context import UIContext, enclosing_tabs
from webui.ui.download_box import build_download_box
from webui.ui.loaded_models import build_loaded_models
from webui.ui.loader_params import LoaderPanels, build_loader_panels
from webui.ui.lora_panel import build_lora_panel
from webui.ui.memory_view import estimate_html

REMOTE_CODE_REASON = "start Hearth with --trust-remote-code to allow models that run their own code"


def locked_params(settings: Settings) -> dict[str, str]:
    """Loader parameters the UI must not offer in this run (name -> reason)."""
    return {} if settings.allow_remote_code else {"trust_remote_code": REMOTE_CODE_REASON}


def _count(n: int | None) -> str:
    if not n:
        return "unknown"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def offered_loaders(loaders: dict[str, type[Loader]]) -> tuple[dict[str, type[Loader]], dict[str, str]]:
    """The loaders that can run here, and the others with why not (name -> reason)."""
    offered, missing = {}, {}
    for name, cls in loaders.items():
        ok, reason = cls.available()
        if ok:
            offered[name] = cls
        else:
            missing[name] = reason or "not installed"
    return offered, missing


def unavailable_markdown(missing: dict[str, str]) -> str:
    """One line per reason, naming the loaders it keeps out of the list."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in missing.items():
        by_reason.setdefault(reason, []).append(name)
    return "\n\n".join(
        f"Not offered on this machine: {', '.join(names)}. {html.escape(reason)}"
        for reason, names in by_reason.items()
    )


def load_key(app: App) -> str | None:
    """What is loaded, as a page remembers it (None: nothing)."""
    models = app.models
    if models.model is None:
        return None
    return repr((models.model_name, models.loader_name, sorted(models.load_params.items())))


def status_text(app: App) -> str:
    models = app.models
    if models.model is None:
        return "No model loaded." + (f" {app.pool.ui_note}" if app.pool.ui_note else "")
    return f"Loaded **{models.model_name}** with **{models.loader_name}**."


def trained_context(info: ModelInfo) -> int:
    """The context the model was trained with: loaders that report the loaded context as
    `context_length` (llama.cpp, ExLlamaV2) keep the trained one in `extra`."""
    return int(info.extra.get("trained_context_length") or info.context_length or 0)


def load_params_text(app: App) -> str:
    """The loaded model's parameters as one line; secrets (an API key) as '***'."""
    loader = app.models.loaders.get(app.models.loader_name or "")
    specs = {p.name: p for p in loader.params} if loader else {}
    shown = (f"{k}={specs[k].shown(v) if k in specs else v}" for k, v in app.models.load_params.items())
    return ", ".join(shown) or "defaults"


def info_markdown(app: App) -> str:
    """The loaded model's facts as a small table (architecture, size, quantization, context, template)."""
    model = app.models.model
    if model is None:
        return ""
    info = model.info
    rows = [
        ("Architecture", info.architecture),
        ("Parameters", _count(info.parameters)),
        ("Quantization", info.quantization or "none"),
        ("Context length", f"{model.n_ctx} (trained: {trained_context(info) or 'unknown'})"),
        ("Vocabulary", str(info.vocab_size or model.vocab_size)),
        (
            "Chat template",
            "found in the model" if info.chat_template else "not found (detected from the name)",
        ),
        ("Images", _vision_text(model)),
        ("Load parameters", load_params_text(app)),
    ]
    return "\n".join(f"- **{k}:** {html.escape(str(v))}" for k, v in rows)


def _vision_text(model) -> str:
    """Whether the model takes images, how many, and through which projector (llama.cpp's mmproj)."""
    if not model.max_images:
        return "no"
    projector = model.info.extra.get("projector")
    return f"up to {model.max_images} per prompt" + (f" (projector {projector})" if projector else "")


class ModelTab:
    """Handlers over the App; `panels` maps the flat widget values back to the selected loader."""

    def __init__(self, app: App, panels: LoaderPanels | None = None):
        self.app = app
        self.panels = panels

    @property
    def user_data(self) -> Path:
        return self.app.settings.user_data_dir

    def settings(self, model: str | None) -> ModelSettings | None:
        """The model's saved settings; a bad settings file is a warning, then the loader's defaults."""
        if not model:
            return None
        models = self.app.models
        if model == models.model_name and models.loader_name:  # the loaded model: what it was loaded with
            return ModelSettings(models.loader_name, dict(models.load_params))
        try:
            if models.remotes is not None and model.startswith(REMOTE_PREFIX):  # its settings: remotes.yaml
                return ModelSettings(*models.remotes.loader_settings(model, models.loaders))
            try:
                chosen = settings_for(models, self.user_data, model)
                ok, reason = models.loaders[chosen.loader].available()
                if ok:
                    return chosen
                gr.Warning(f"{model}: its saved loader {chosen.loader} cannot run here: {reason}")
            except ModelSettingsError as exc:
                gr.Warning(str(exc))
            loader = models.choose_loader(models.resolve(model).path)
            return ModelSettings(loader, models.loaders[loader].resolve_params({}))
        except HearthError as exc:  # unknown model, no loader for it
            gr.Warning(str(exc))
            return None

    def memory(self, model: str | None, loader: str | None, *values: Any) -> str:
        if not model or not loader or self.panels is None:
            return ""
        try:
            path = self.app.models.resolve(model).path
            refused = self.app.models.loader_refusal(path, loader)
            if refused:
                return f'<div id="memory-estimate">This loader cannot load this file: {html.escape(refused)}</div>'
            params = self.app.models.loaders[loader].resolve_params(self.panels.values(loader, values))
        except HearthError as exc:
            return f'<div id="memory-estimate">Memory estimate unavailable: {html.escape(str(exc))}</div>'
        return estimate_html(path, loader, params)

    def select_model(self, model: str | None, *values: Any) -> list[Any]:
        """A model was picked: its loader and saved parameters fill the form, the estimate follows."""
        assert self.panels is not None
        chosen = self.settings(model)
        if chosen is None:
            return [
                gr.update(),
                *self.panels.visibility(""),
                *self.panels.fill("", {}),
                self.memory(None, None),
            ]
        fill = self.panels.fill(chosen.loader, chosen.params)
        merged = list(values)
        for i, update in enumerate(fill):
            if isinstance(update, dict) and "value" in update:
                merged[i] = update["value"]
        return [
            gr.update(value=chosen.loader),
            *self.panels.visibility(chosen.loader),
            *fill,
            self.memory(model, chosen.loader, *merged),
        ]

    def select_loader(self, model: str | None, loader: str | None, *values: Any) -> list[Any]:
        assert self.panels is not None
        return [*self.panels.visibility(loader or ""), self.memory(model, loader, *values)]

    def load(self, model: str | None, loader: str | None, *values: Any) -> tuple[str, str]:
        if not model:
            raise gr.Error("choose a model first", print_exception=False)
        assert self.panels is not None
        refused = self.panels.refusal(loader or "", values)
        if refused:
            raise gr.Error(f"{model} not loaded: {refused}.", print_exception=False)
        try:
            self.app.pool.load_ui(model, loader or None, self.panels.values(loader or "", values))
        except HearthError as exc:
            kept = f" {self.app.models.model_name} is still loaded." if self.app.models.model else ""
            raise gr.Error(f"{model} not loaded: {exc}.{kept}", print_exception=False) from None
        return status_text(self.app), info_markdown(self.app)

    def unload(self) -> tuple[str, str, str | None]:
        self.app.pool.unload()
        return self.loaded_view()

    def save(self, model: str | None, loader: str | None, *values: Any) -> None:
        if not model or not loader:
            raise gr.Error("choose a model and a loader first", print_exception=False)
        assert self.panels is not None
        refused = self.panels.refusal(loader, values)
        if refused:
            raise gr.Error(f"settings not saved: {refused}.", print_exception=False)
        try:
            path = save_settings(
                self.app.models, self.user_data, model, loader, self.panels.values(loader, values)
            )
        except HearthError as exc:
            raise gr.Error(f"settings not saved: {exc}", print_exception=False) from None
        gr.Info(f"Saved settings for {model} ({path.name}); they are applied whenever it is selected.")

    def refresh(self, current: str | None) -> Any:
        """The models folder re-read; `current` stays selected while it exists."""
        names = [m.name for m in self.app.models.list_models()]
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    def tab_selected(self, shown: str | None, current: str | None, *values: Any) -> list[Any]:
        """The tab was selected: the list is re-read and the status and info follow loads made elsewhere.
        A load this page has not shown yet (`shown`: `load_key` of the last one) fills the form with the
        loaded model, its loader and the parameters it was loaded with; otherwise the form keeps what the
        user chose and typed. Returns the new `shown` first."""
        assert self.panels is not None
        names = [m.name for m in self.app.models.list_models()]
        loaded, key = self.app.models.model_name, load_key(self.app)
        if key is None or key == shown or loaded not in names:
            form = [self.refresh(current), *[gr.update()] * (len(self.panels.groups) + len(self.panels.inputs) + 2)]
        else:
            form = [gr.update(choices=names, value=loaded), *self.select_model(loaded, *values)]
        return [key, *form, status_text(self.app), info_markdown(self.app)]

    def loaded_view(self) -> tuple[str, str, str | None]:
        """Status, info and `load_key` after a load or unload from this page."""
        return status_text(self.app), info_markdown(self.app), load_key(self.app)

    def downloaded(self, name: str) -> Any:
        return self.refresh(name) if name else gr.update()


def _initial_model(app: App) -> str | None:
    names = [m.name for m in app.models.list_models()]
    return app.models.model_name or (names[0] if names else None)


def build_model_tab(ctx: UIContext) -> None:
    app = ctx.app
    tab = ModelTab(app)
    offered, missing = offered_loaders(app.loaders)
    model_name = _initial_model(app)
    initial = tab.settings(model_name)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                model = gr.Dropdown(
                    label="Model",
                    choices=[m.name for m in app.models.list_models()],
                    value=model_name,
                    elem_id="model-dropdown",
                    scale=4,
                )
                refresh = gr.Button(
                    "Refresh", size="sm", scale=0, min_width=80, elem_id="model-refresh", elem_classes="hearth-refresh"
                )
                loader = gr.Dropdown(
                    label="Loader",
                    choices=list(offered),
                    value=initial.loader if initial else None,
                    elem_id="loader-dropdown",
                    scale=2,
                )
            if missing:
                gr.Markdown(unavailable_markdown(missing), elem_id="loader-unavailable", elem_classes="hearth-keys")
            tab.panels = panels = build_loader_panels(
                offered,
                initial.loader if initial else None,
                initial.params if initial else None,
                locked_params(app.settings),
            )
        with gr.Column(scale=2):
            with gr.Row():
                load = gr.Button("Load", variant="primary", elem_id="model-load")
                unload = gr.Button("Unload", elem_id="model-unload")
                save = gr.Button("Save settings for this model", elem_id="model-save")
            status = gr.Markdown(lambda: status_text(app), elem_id="model-status")
            memory = gr.HTML(
                tab.memory(model_name, initial.loader, *[w.value for w in panels.inputs]) if initial else "",
                elem_id="memory-box",
            )
            info = gr.Markdown(lambda: info_markdown(app), elem_id="model-info")
            loaded = build_loaded_models(app)
            downloaded = build_download_box(app)
            loras = build_lora_panel(app)

    widgets = panels.inputs
    groups = list(panels.groups.values())
    select = (tab.select_model, [model, *widgets], [loader, *groups, *widgets, memory])
    # .change, not .input: the dropdown reports one pick as several input events, and a late repeat would
    # overwrite what the user typed meanwhile; always_last: a quick second pick must not be dropped
    model.change(*select, trigger_mode="always_last")
    loader.input(tab.select_loader, [model, loader, *widgets], [*groups, memory])
    # .input, not .change: filling the form for a newly selected model must not fire one estimate per widget
    gr.on([w.input for w in widgets], tab.memory, [model, loader, *widgets], memory, show_progress="hidden")
    refresh.click(tab.refresh, [model], [model])
    shown = gr.State(None)  # per page: `load_key` of the load the form last showed
    for enclosing in enclosing_tabs(model):
        enclosing.select(tab.tab_selected, [shown, model, *widgets],
                         [shown, model, loader, *groups, *widgets, memory, status, info], show_progress="hidden")
        enclosing.select(loras.follow, [loras.names], [loras.status, loras.names], show_progress="hidden")
    downloaded.change(tab.downloaded, [downloaded], [model])  # the new value fires model.change
    # then: the true state after a failed load too
    panel = ([loaded.choice], [loaded.table, loaded.choice])
    load.click(tab.load, [model, loader, *widgets], [status, info], concurrency_limit=1).then(
        tab.loaded_view, None, [status, info, shown]
    ).then(loras.follow, [loras.names], [loras.status, loras.names]).then(loaded.refresh, *panel)  # a load clears the LoRAs
    unload.click(tab.unload, None, [status, info, shown]).then(loras.follow, [loras.names], [loras.status, loras.names]).then(
        loaded.refresh, *panel)
    for event in (loaded.use_event, loaded.unload_event):  # the UI may talk to another model now
        event.success(tab.loaded_view, None, [status, info, shown]).then(loras.follow, [loras.names], [loras.status, loras.names])
    for enclosing in enclosing_tabs(model):
        enclosing.select(loaded.refresh, *panel, show_progress="hidden")
    save.click(tab.save, [model, loader, *widgets], None)
