"""The Model tab: widgets generated from loader declarations, the memory view, and in a real browser:
load a GGUF, watch the estimate follow n_ctx, fail a load with a bad parameter and keep the old model."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gradio as gr
import pytest

from webui.loader_api import LoaderParam
from webui.memory_estimate import GiB, MemoryEstimate, kv_cache_bytes, read_gguf
from webui.ui.loader_params import build_loader_panels, elem_prefix
from webui.ui.memory_view import memory_html
from webui.ui.model_tab import ModelTab, info_markdown, offered_loaders
from webui.ui.param_widgets import use_slider, widget_for

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
ROOT = Path(__file__).resolve().parent.parent
GGUF = "tiny-llama.gguf"


@pytest.mark.parametrize(
    ("param", "kind"),
    [
        (LoaderParam("flag", "bool", True, "h"), gr.Checkbox),
        (LoaderParam("pick", "choice", "a", "h", choices=("a", "b")), gr.Dropdown),
        (LoaderParam("text", "str", "", "h"), gr.Textbox),
        (LoaderParam("layers", "int", 0, "h", -1, 1000), gr.Slider),
        (LoaderParam("ctx", "int", 0, "h", 0, 1 << 20, step=256), gr.Number),
        (LoaderParam("base", "float", 0.0, "h", 0), gr.Number),
        (LoaderParam("alpha", "float", 1.0, "h", 1.0, 8.0, step=0.05), gr.Slider),
    ],
)
def test_widget_kind_follows_the_declaration(param: LoaderParam, kind: type) -> None:
    with gr.Blocks():
        widget = widget_for(param, elem_prefix="loader-x-")
    assert isinstance(widget, kind)
    assert widget.label == param.name and widget.info == param.help
    assert widget.elem_id == f"loader-x-{param.name}"


def test_widget_ranges_and_values() -> None:
    with gr.Blocks():
        slider = widget_for(LoaderParam("layers", "int", 0, "h", -1, 1000), 7)
        number = widget_for(LoaderParam("ctx", "int", 0, "h", 0, 1 << 20, step=256))
        dropdown = widget_for(LoaderParam("pick", "choice", "a", "h", choices=("a", "b")))
    assert (slider.minimum, slider.maximum, slider.step, slider.value) == (-1, 1000, 1, 7)
    assert (number.minimum, number.maximum, number.step, number.precision) == (0, 1 << 20, 256, 0)
    assert [c[1] for c in dropdown.choices] == ["a", "b"]
    assert not use_slider(LoaderParam("s", "str", "", "h", 0, 1))


def test_panels_show_one_loader_and_split_values(loaders: dict) -> None:
    names = list(loaders)
    with gr.Blocks():
        panels = build_loader_panels(loaders, names[0], {loaders[names[0]].params[0].name: 99})
    assert panels.groups[names[0]].visible and not any(panels.groups[n].visible for n in names[1:])
    first = loaders[names[0]].params[0]
    assert panels.widgets[names[0]][0][1].value == 99
    flat = [w.value for w in panels.inputs]
    for name in names:
        values = panels.values(name, flat)
        assert list(values) == [p.name for p in loaders[name].params]
    assert panels.values(names[0], flat)[first.name] == 99
    visibility = panels.visibility(names[-1])
    assert [u["visible"] for u in visibility] == [n == names[-1] for n in names]
    assert elem_prefix("llama.cpp") == "loader-llama-cpp-"


def test_memory_html_scales_and_says_whether_it_fits() -> None:
    est = MemoryEstimate(
        weights_gpu=0, weights_cpu=GiB, kv_cache=GiB // 2, overhead=GiB // 2, vram=0, ram=2 * GiB
    )
    fits = memory_html(est, {"ram_available": 4 * GiB, "vram_free": 0})
    assert "Estimated memory: 2.00 GiB" in fits and "fits in 4.00 GiB available RAM" in fits
    assert 'style="width:25.00%"' in fits  # 1 GiB of weights on a 4 GiB scale
    tight = memory_html(est, {"ram_available": GiB, "vram_free": 0})
    assert "does not fit" in tight and 'style="width:50.00%"' in tight  # the bar scales to the total


def test_info_shows_the_loaded_and_the_trained_context(manager: Any) -> None:
    """Issue 13: llama.cpp reports the loaded context as context_length; the trained one is the GGUF's."""
    manager.load(GGUF, params={"n_ctx": 512})
    assert "Context length:** 512 (trained: 1024)" in info_markdown(SimpleNamespace(models=manager))
    manager.load("tiny-llama")  # Transformers: the context it runs with is the trained one
    assert "Context length:** 1024 (trained: 1024)" in info_markdown(SimpleNamespace(models=manager))


def test_memory_estimate_says_when_the_loader_cannot_load_the_file(manager: Any, loaders: dict) -> None:
    with gr.Blocks():
        panels = build_loader_panels(loaders, "Transformers")
    tab = ModelTab(SimpleNamespace(models=manager), panels)
    values = [w.value for w in panels.inputs]
    refused = tab.memory(GGUF, "Transformers", *values)
    assert "This loader cannot load this file" in refused and "fits" not in refused
    assert "llama.cpp" in refused  # names the loaders that can
    assert "Estimated memory" in tab.memory(GGUF, "llama.cpp", *values)
    assert "cannot load" in tab.memory("tiny-llama", "llama.cpp", *values)


def no_cuda(monkeypatch: pytest.MonkeyPatch, loaders: dict) -> None:
    """ExLlamaV2 and ExLlamaV3 as on a machine without CUDA, wherever the tests run."""
    for name in ("ExLlamav2", "ExLlamav2_HF", "ExLlamav3", "ExLlamav3_HF"):
        monkeypatch.setattr(loaders[name], "available", classmethod(lambda cls: (False, "needs CUDA.")))


def test_loaders_that_cannot_run_here_are_not_offered(
    monkeypatch: pytest.MonkeyPatch, ui_app: Any, tmp_path: Path
) -> None:
    """Issue 13: ExLlama was offered on a machine without CUDA; now it is left out, with the reason."""
    from webui.model_settings import save_settings
    from webui.ui.context import UIContext
    from webui.ui.model_tab import build_model_tab

    no_cuda(monkeypatch, ui_app.loaders)
    offered, missing = offered_loaders(ui_app.loaders)
    assert "ExLlamav2" not in offered and "ExLlamav3" not in offered
    assert missing == dict.fromkeys(("ExLlamav2", "ExLlamav2_HF", "ExLlamav3", "ExLlamav3_HF"), "needs CUDA.")
    with gr.Blocks() as blocks:
        build_model_tab(UIContext(ui_app, gr.State({}), gr.State({}), gr.State(None), gr.State(None)))
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    assert [c[1] for c in by_id["loader-dropdown"].choices] == list(offered)
    note = by_id["loader-unavailable"].value
    assert note.count("needs CUDA") == 1 and "ExLlamav2, ExLlamav2_HF, ExLlamav3, ExLlamav3_HF" in note
    assert not any(w.elem_id and w.elem_id.startswith("loader-exllama") for w in by_id.values())

    # settings saved for a loader that cannot run here fall back to one that can
    monkeypatch.setattr(ui_app.loaders["ExLlamav2"], "available", classmethod(lambda cls: (True, "")))
    save_settings(ui_app.models, ui_app.settings.user_data_dir, "tiny-llama", "ExLlamav2", {})
    no_cuda(monkeypatch, ui_app.loaders)
    with pytest.warns(UserWarning, match="saved loader ExLlamav2 cannot run here: needs CUDA"):
        chosen = ModelTab(ui_app).settings("tiny-llama")
    assert chosen is not None and chosen.loader == "Transformers"


# -- in the browser --------------------------------------------------------------------------------------


def open_model_tab(page: Any) -> None:
    page.get_by_role("tab", name="Model").click()
    page.wait_for_selector("#model-load")


def pick(page: Any, elem_id: str, option: str) -> None:
    """Choose `option` in a Gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def set_number(page: Any, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


@pytest.mark.browser
def test_load_gguf_estimate_follows_n_ctx_and_bad_params_keep_the_model(
    page: Any, ui_server: UIServer
) -> None:
    app = ui_server.app
    open_model_tab(page)
    pick(page, "model-dropdown", GGUF)
    page.wait_for_function("document.querySelector('#loader-dropdown input')?.value === 'llama.cpp'")
    prefix = elem_prefix("llama.cpp")
    facts = read_gguf(app.models.resolve(GGUF).path)

    def kv_at(n_ctx: int) -> int:  # the KV cache the estimate must show for this context
        return kv_cache_bytes(facts.n_layers, n_ctx, facts.n_kv_heads, facts.head_dim)

    set_number(page, f"{prefix}n_ctx", 256)
    page.wait_for_function(f"+document.querySelector('#memory-estimate')?.dataset.kv === {kv_at(256)}")
    assert "Estimated memory" in page.locator("#memory-estimate").inner_text()
    set_number(page, f"{prefix}n_ctx", 1024)
    page.wait_for_function(f"+document.querySelector('#memory-estimate').dataset.kv === {kv_at(1024)}")
    assert kv_at(1024) == 4 * kv_at(256)

    page.locator("#model-load").click()
    page.wait_for_function(
        f"document.querySelector('#model-status').textContent.includes('{GGUF}')", timeout=120_000
    )
    info = page.locator("#model-info").inner_text()
    assert "Architecture: llama" in info and "Context length" in info and "Chat template" in info
    assert app.models.model_name == GGUF and app.models.model.n_ctx == 1024
    ui_server.shot(page, "model-loaded")
    if os.environ.get("HEARTH_UPDATE_SCREENSHOTS"):  # refresh the README picture on request only
        page.screenshot(path=str(ROOT / "docs" / "screenshot-model.png"))

    pick(page, f"{prefix}cache_type", "q8_0")  # needs flash_attn: rejected before unloading
    page.locator("#model-load").click()
    toast = page.locator(".toast-body.error")
    toast.wait_for()
    assert "flash_attn" in toast.inner_text() and "still loaded" in toast.inner_text()
    ui_server.shot(page, "bad-param")
    assert app.models.model_name == GGUF
    assert GGUF in page.locator("#model-status").inner_text()


@pytest.mark.browser
def test_saved_settings_come_back_when_the_model_is_selected(page: Any, ui_server: UIServer) -> None:
    open_model_tab(page)
    pick(page, "model-dropdown", GGUF)
    prefix = elem_prefix("llama.cpp")
    page.wait_for_function("document.querySelector('#loader-dropdown input')?.value === 'llama.cpp'")
    set_number(page, f"{prefix}n_ctx", 512)
    page.locator("#model-save").click()
    page.locator(".toast-body.info").wait_for()
    saved = ui_server.app.settings.user_data_dir / "models" / f"{GGUF}.yaml"
    assert "n_ctx: 512" in saved.read_text()

    page.reload()
    page.wait_for_selector("button[role='tab']")
    open_model_tab(page)
    pick(page, "model-dropdown", "tiny-llama")
    page.wait_for_function("document.querySelector('#loader-dropdown input')?.value === 'Transformers'")
    pick(page, "model-dropdown", GGUF)
    page.wait_for_function(f"document.querySelector('#{prefix}n_ctx input')?.value === '512'")
    shutil.rmtree(saved.parent)


@pytest.mark.browser
def test_download_box_lists_quants_and_downloads_the_pick(
    page: Any, ui_server: UIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fake_hub import FakeHub

    hub = FakeHub()
    quants = {f"tiny.{q}.gguf": f"GGUF {q} ".encode() * 20_000 for q in ("Q4_K_M", "Q8_0")}
    hub.add_repo("someone/tiny-GGUF", quants)
    hub.start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    models = tmp_path / "downloads"
    models.mkdir()
    app = ui_server.app
    monkeypatch.setattr(app.settings, "models_dir", models)
    monkeypatch.setattr(app.models, "models_dir", models)
    try:
        open_model_tab(page)
        page.locator("#download-box").get_by_text("Download a model from Hugging Face").click()
        page.locator("#download-repo textarea, #download-repo input").first.fill("someone/tiny-GGUF")
        page.get_by_role("button", name="List files").click()
        page.locator("#download-quant input").click()
        page.get_by_role("option", name=re.compile(r"^Q8_0 — ")).click()
        page.locator("#download-start").click()
        page.wait_for_function(
            "document.querySelector('#download-progress')?.textContent.includes('Downloaded')"
        )
        page.wait_for_function("document.querySelector('#model-dropdown input')?.value === 'tiny.Q8_0.gguf'")
        ui_server.shot(page, "downloaded")
    finally:
        hub.stop()
    assert sorted(p.name for p in models.iterdir()) == ["tiny.Q8_0.gguf"]
    assert hub.served == ["tiny.Q8_0.gguf"]


def wait_input(page: Any, elem_id: str, value: str) -> None:
    page.wait_for_function(
        f"document.querySelector('#{elem_id} input')?.value === {value!r}"
    )


@pytest.mark.browser
def test_a_loader_that_cannot_load_the_file_keeps_the_model(page: Any, ui_server: UIServer) -> None:
    """Issue 13: with the GGUF loaded, Transformers + Load used to unload it and fail afterwards."""
    app = ui_server.app
    app.models.load(GGUF, params={"n_ctx": 256})
    page.reload()
    page.wait_for_selector("button[role='tab']")
    open_model_tab(page)
    wait_input(page, "model-dropdown", GGUF)
    pick(page, "loader-dropdown", "Transformers")
    page.wait_for_function(
        "document.querySelector('#memory-estimate')?.textContent.includes('This loader cannot load this file')"
    )
    assert "fits" not in page.locator("#memory-estimate").inner_text()
    page.locator("#model-load").click()
    toast = page.locator(".toast-body.error")
    toast.wait_for()
    text = toast.inner_text()
    assert "Transformers loader cannot load" in text and f"{GGUF} is still loaded" in text
    ui_server.shot(page, "wrong-loader")
    assert (app.models.model_name, app.models.loader_name) == (GGUF, "llama.cpp")
    assert app.models.require().tokenize("Hello")
    page.wait_for_function(f"document.querySelector('#model-status').textContent.includes('{GGUF}')")
    assert "llama.cpp" in page.locator("#model-status").inner_text()


@pytest.mark.browser
def test_model_tab_shows_what_is_loaded_and_the_current_list(
    page: Any, ui_server: UIServer, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: a load made elsewhere (the API, another tab) and a model added to models/ show up on a
    page load, with the parameters the model was loaded with, not the start-up values."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (GGUF, "tiny-llama"):
        (folder / name).symlink_to(models_dir / name)
    app = ui_server.app
    monkeypatch.setattr(app.models, "models_dir", folder)
    app.models.load(GGUF, params={"n_ctx": 512})  # as /v1/internal/model/load does
    page.reload()
    page.wait_for_selector("button[role='tab']")
    open_model_tab(page)
    prefix = elem_prefix("llama.cpp")
    wait_input(page, "model-dropdown", GGUF)
    wait_input(page, "loader-dropdown", "llama.cpp")
    page.wait_for_function(f"document.querySelector('#{prefix}n_ctx input')?.value === '512'")
    assert GGUF in page.locator("#model-status").inner_text()
    assert "512 (trained: 1024)" in page.locator("#model-info").inner_text()
    ui_server.shot(page, "loaded-elsewhere")

    (folder / "added.gguf").symlink_to(models_dir / GGUF)  # a new file, then a tab switch: no restart
    app.models.unload()
    page.get_by_role("tab", name="Chat").click()
    open_model_tab(page)
    page.wait_for_function("document.querySelector('#model-status').textContent.includes('No model loaded')")
    assert page.locator("#model-info").inner_text().strip() == ""
    assert page.locator(f"#{prefix}n_ctx input").input_value() == "512"  # the form is kept
    page.locator("#model-dropdown input").click()
    page.get_by_role("option", name="added.gguf", exact=True).wait_for()


def revisit_model_tab(page: Any) -> None:
    page.get_by_role("tab", name="Chat").click()
    open_model_tab(page)


@pytest.mark.browser
def test_model_tab_follows_loads_made_in_another_browser_tab_and_the_api(
    browser: Any, page: Any, ui_server: UIServer
) -> None:
    """Issue 13: a load made elsewhere showed in the status, but the form kept the first model this page
    had shown; now each load this page has not shown yet fills the form on the next visit."""
    app = ui_server.app
    prefix = elem_prefix("llama.cpp")
    open_model_tab(page)
    wait_input(page, "model-dropdown", "tiny-llama")  # nothing loaded: the first model, by name

    other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    try:
        other.set_default_timeout(90_000)
        other.goto(ui_server.url)
        other.wait_for_selector("button[role='tab']")
        open_model_tab(other)
        pick(other, "model-dropdown", GGUF)
        wait_input(other, "loader-dropdown", "llama.cpp")
        set_number(other, f"{prefix}n_ctx", 384)
        other.locator("#model-load").click()
        other.wait_for_function(f"document.querySelector('#model-status').textContent.includes('{GGUF}')")
    finally:
        other.context.close()
    assert app.models.model_name == GGUF

    revisit_model_tab(page)
    wait_input(page, "model-dropdown", GGUF)
    wait_input(page, "loader-dropdown", "llama.cpp")
    page.wait_for_function(f"document.querySelector('#{prefix}n_ctx input')?.value === '384'")
    assert GGUF in page.locator("#model-status").inner_text()

    pick(page, "model-dropdown", "tiny-llama")  # looking at another model: a revisit keeps the form
    wait_input(page, "loader-dropdown", "Transformers")
    revisit_model_tab(page)
    assert page.locator("#model-dropdown input").input_value() == "tiny-llama"

    app.models.load(GGUF, params={"n_ctx": 640})  # as /v1/internal/model/load does
    revisit_model_tab(page)
    wait_input(page, "model-dropdown", GGUF)
    page.wait_for_function(f"document.querySelector('#{prefix}n_ctx input')?.value === '640'")
    page.wait_for_function("document.querySelector('#model-info').textContent.includes('n_ctx=640')")
    ui_server.shot(page, "followed-api-load")
