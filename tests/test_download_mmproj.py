"""A vision model's GGUF repo: its projector (mmproj) comes with the quant picked, as llama-server's -hf
does, through the real huggingface_hub client against tests/fake_hub.py (nothing leaves 127.0.0.1)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from tests.fake_hub import FakeHub
from webui.download import download, format_listing, main
from webui.gguf_files import find_projector
from webui.hub import SelectionRequired, list_repo, select_files
from webui.models import discover_models
from webui.ui.download_box import DownloadBox, quant_choices

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]

REPO = "someone/tiny-vision-GGUF"
FILES = {
    "tiny-vision-Q4_K_M.gguf": b"GGUF Q4_K_M " * 300,
    "tiny-vision-Q8_0.gguf": b"GGUF Q8_0 " * 400,
    "mmproj-tiny-vision-BF16.gguf": b"GGUF mmproj bf16 " * 50,
    "mmproj-tiny-vision-F16.gguf": b"GGUF mmproj f16 " * 50,
    "mmproj-tiny-vision-F32.gguf": b"GGUF mmproj f32 " * 100,
    "README.md": b"# tiny vision",
}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fake = FakeHub()
    fake.add_repo(REPO, FILES)
    fake.add_repo("someone/text-GGUF", {"text.Q8_0.gguf": b"GGUF text " * 100})
    fake.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    yield fake
    fake.stop()


def test_projectors_are_not_quantizations_and_f16_is_the_one_offered(hub: FakeHub) -> None:
    listing = list_repo(REPO)
    # mmproj-...-F16 would otherwise have been an "F16" quant of the model
    assert set(listing.quantizations()) == {"Q4_K_M", "Q8_0"}
    assert listing.projector is not None and listing.projector.path == "mmproj-tiny-vision-F16.gguf"
    assert [f.path for f in select_files(listing, "Q8_0")] == [
        "tiny-vision-Q8_0.gguf",
        "mmproj-tiny-vision-F16.gguf",
    ]
    assert [f.path for f in select_files(listing, "Q8_0", mmproj=False)] == ["tiny-vision-Q8_0.gguf"]
    assert [f.path for f in select_files(listing, "*F32*")] == [
        "mmproj-tiny-vision-F32.gguf"
    ]  # a glob: what it matches
    assert "mmproj-tiny-vision-F16.gguf" in format_listing(listing)
    with pytest.raises(SelectionRequired, match="Q4_K_M, Q8_0"):
        select_files(listing)
    assert list_repo("someone/text-GGUF").projector is None


def test_a_quant_downloads_with_its_projector_into_a_folder_the_loader_pairs(
    hub: FakeHub, tmp_path: Path
) -> None:
    path = download(REPO, tmp_path, select="Q4_K_M")
    assert path == tmp_path / "tiny-vision-Q4_K_M"
    assert sorted(p.name for p in path.iterdir()) == [
        "mmproj-tiny-vision-F16.gguf",
        "tiny-vision-Q4_K_M.gguf",
    ]
    assert sorted(hub.served) == ["mmproj-tiny-vision-F16.gguf", "tiny-vision-Q4_K_M.gguf"]
    assert (path / "mmproj-tiny-vision-F16.gguf").read_bytes() == FILES["mmproj-tiny-vision-F16.gguf"]
    # a second quant is a second model, with its own copy of the projector
    second = download(REPO, tmp_path, select="Q8_0")
    assert [m.name for m in discover_models(tmp_path)] == ["tiny-vision-Q4_K_M", "tiny-vision-Q8_0"]
    assert (
        find_projector(path, path / "tiny-vision-Q4_K_M.gguf", "auto") == path / "mmproj-tiny-vision-F16.gguf"
    )
    assert (
        find_projector(second, second / "tiny-vision-Q8_0.gguf", "auto")
        == second / "mmproj-tiny-vision-F16.gguf"
    )
    # without the projector the quant lands alone, as any GGUF does
    alone = download(REPO, tmp_path / "plain", select="Q8_0", mmproj=False)
    assert alone == tmp_path / "plain" / "tiny-vision-Q8_0.gguf" and alone.is_file()


def test_the_command_lists_the_projector_and_takes_it_unless_told(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([REPO, "--models-dir", str(tmp_path)]) == 2
    assert "projector" in capsys.readouterr().out
    assert main([REPO, "--select", "Q8_0", "--models-dir", str(tmp_path)]) == 0
    assert (tmp_path / "tiny-vision-Q8_0" / "mmproj-tiny-vision-F16.gguf").is_file()
    assert main([REPO, "--select", "Q4_K_M", "--no-mmproj", "--models-dir", str(tmp_path)]) == 0
    assert (tmp_path / "tiny-vision-Q4_K_M.gguf").is_file()


def test_the_download_box_offers_the_projector_with_the_quant(hub: FakeHub, tmp_path: Path) -> None:
    choices, summary, projector = quant_choices(REPO)
    assert [value for _, value in choices] == ["Q4_K_M", "Q8_0"]
    assert "vision model" in summary and projector is not None and "mmproj-tiny-vision-F16.gguf" in projector
    assert quant_choices("someone/text-GGUF")[2] is None
    app = SimpleNamespace(settings=SimpleNamespace(models_dir=tmp_path, loras_dir=tmp_path / "loras"))
    box = DownloadBox(app)  # type: ignore[arg-type]
    _, _, checkbox = box.list_files(REPO)
    assert checkbox["visible"] is True and checkbox["value"] is True and "mmproj" in checkbox["label"]
    assert box.list_files("someone/text-GGUF")[2]["visible"] is False
    request = SimpleNamespace(session_hash="one")
    *_, last = box.start(REPO, "Q8_0", True, request)  # type: ignore[arg-type]
    assert last[1] == "tiny-vision-Q8_0"
    *_, last = box.start(REPO, "Q4_K_M", False, request)  # type: ignore[arg-type]
    assert last[1] == "tiny-vision-Q4_K_M.gguf"
    assert sorted(p.name for p in (tmp_path / "tiny-vision-Q8_0").iterdir()) == [
        "mmproj-tiny-vision-F16.gguf",
        "tiny-vision-Q8_0.gguf",
    ]


@pytest.mark.browser
def test_the_download_box_shows_the_projector_and_fetches_it_with_the_quant(
    page: Any, ui_server: UIServer, hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "downloads"
    models.mkdir()
    monkeypatch.setattr(ui_server.app.settings, "models_dir", models)
    monkeypatch.setattr(ui_server.app.models, "models_dir", models)
    page.get_by_role("tab", name="Model").click()
    page.wait_for_selector("#model-load")
    page.locator("#download-box").get_by_text("Download a model from Hugging Face").click()
    page.locator("#download-repo textarea, #download-repo input").first.fill(REPO)
    page.get_by_role("button", name="List files").click()
    page.locator("#download-mmproj").get_by_text("mmproj-tiny-vision-F16.gguf").wait_for()
    assert page.locator("#download-mmproj input").is_checked()
    page.locator("#download-quant input").click()
    page.get_by_role("option", name=re.compile(r"^Q8_0 — ")).click()
    page.locator("#download-start").click()
    page.wait_for_function("document.querySelector('#model-dropdown input')?.value === 'tiny-vision-Q8_0'")
    ui_server.shot(page, "downloaded-with-projector")
    assert sorted(p.name for p in (models / "tiny-vision-Q8_0").iterdir()) == [
        "mmproj-tiny-vision-F16.gguf",
        "tiny-vision-Q8_0.gguf",
    ]
