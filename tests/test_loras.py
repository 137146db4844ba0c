"""LoRA adapters on the tiny model: made with PEFT itself, applied and removed without reloading, through
Transformers (PEFT) and llama.cpp (converted with llama.cpp's own convert_lora_to_gguf.py), and the API."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.model_factory import TinyConfig, build_pair, make_peft_adapter
from tests.test_api_server import Served, assert_error, serve_api
from webui.errors import LoaderError
from webui.lora_convert import convert_peft_adapter, find_converter
from webui.loras import LoraMismatch, LoraNotFound, discover_loras, gguf_type, resolve_choices, resolve_lora
from webui.models import ModelManager

PROMPT = "Once upon a time"


@pytest.fixture(scope="session")
def loras_dir(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """loras/ with `style` (for tiny-llama) and `other-base` (for a model of another width)."""
    root = tmp_path_factory.mktemp("loras")
    make_peft_adapter(models_dir / "tiny-llama", root / "style")
    other_hf, _ = build_pair(
        tmp_path_factory.mktemp("other_model"), TinyConfig(hidden=64, intermediate=128, seed=7)
    )
    make_peft_adapter(other_hf, root / "other-base", seed=1)
    (root / "not-an-adapter").mkdir()
    (root / "README.md").write_text("adapters here")
    return root


@pytest.fixture(scope="session")
def converter() -> Path:
    found = find_converter()
    if found is None:
        pytest.skip("llama.cpp's convert_lora_to_gguf.py is not available (no llama-cpp-python sdist)")
    return found


def greedy(model, prompt: str = PROMPT, steps: int = 12) -> list[int]:
    ids = model.tokenize(prompt)
    for _ in range(steps):
        ids.append(int(torch.argmax(model.logits(ids))))
    return ids


def test_discover_and_resolve_only_adapters(loras_dir: Path, models_dir: Path):
    shutil.copy(models_dir / "tiny-llama.gguf", loras_dir / "a-model.gguf")  # a model GGUF, not an adapter
    try:
        assert gguf_type(loras_dir / "a-model.gguf") == "model"
        assert [(x.name, x.kind) for x in discover_loras(loras_dir)] == [
            ("other-base", "peft"),
            ("style", "peft"),
        ]
        assert resolve_lora(loras_dir, "style").path == loras_dir / "style"
        for bad in ("../loras", "style/..", "/etc", "", ".", "..", "a\\b", "a-model.gguf", "not-an-adapter"):
            with pytest.raises(LoraNotFound, match="Available: other-base, style"):
                resolve_lora(loras_dir, bad)
    finally:
        (loras_dir / "a-model.gguf").unlink()
    with pytest.raises(LoaderError, match="listed twice"):
        resolve_choices(loras_dir, ["style", "style"])
    with pytest.raises(LoaderError, match="one weight per LoRA"):
        resolve_choices(loras_dir, ["style"], [1.0, 2.0])


def same_logits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same adapters read the same logits, up to float32 noise: a read through a cached prefix and a
    full one sum in another order (differences of ~1e-5 seen on logits of ~10; a LoRA moves them by > 0.5)."""
    return torch.allclose(a, b, atol=1e-4)


def test_transformers_apply_remove_scale_and_wrong_base(manager: ModelManager, loras_dir: Path):
    model = manager.load("tiny-llama", "Transformers")
    ids = model.tokenize(PROMPT)
    base_logits, base_tokens = model.logits(ids).clone(), greedy(model)

    manager.apply_loras(resolve_choices(loras_dir, ["style"]))
    assert manager.lora_names == ["style"] and manager.model is model  # not reloaded
    with_lora = model.logits(ids).clone()
    assert (with_lora - base_logits).abs().max() > 0.5 and greedy(model) != base_tokens

    # another base model's adapter: refused naming the module, the applied LoRA stays
    with pytest.raises(
        LoraMismatch,
        match=r"down_proj is 128x256 here, the adapter was made for 64x128 \(a LoRA for another base model\)",
    ):
        manager.apply_loras(resolve_choices(loras_dir, ["other-base"]))
    assert manager.lora_names == ["style"] and same_logits(model.logits(ids), with_lora)

    manager.apply_loras(resolve_choices(loras_dir, ["style"], [0.0]))
    assert torch.equal(model.logits(ids), base_logits)
    manager.apply_loras(resolve_choices(loras_dir, ["style"], [0.5]))
    half = model.logits(ids)
    assert not torch.equal(half, base_logits) and not torch.equal(half, with_lora)

    manager.apply_loras([])
    assert manager.lora_names == [] and torch.equal(model.logits(ids), base_logits)
    assert greedy(model) == base_tokens


def test_same_adapter_same_tokens_on_transformers_and_llamacpp(
    manager: ModelManager, loras_dir: Path, converter: Path
):
    style = resolve_choices(loras_dir, ["style"])
    hf = manager.load("tiny-llama", "Transformers")
    manager.apply_loras(style)
    hf_tokens = greedy(hf)
    hf_logits = hf.logits(hf_tokens[:-1]).clone()

    gg = manager.load("tiny-llama.gguf", "llama.cpp", {"cache_type": "f32"})
    assert manager.lora_names == []  # a load starts without LoRAs
    base_tokens = greedy(gg)
    manager.apply_loras(style)  # the PEFT folder, converted to GGUF by llama.cpp's converter
    assert (loras_dir / "style" / "hearth-f32.gguf").is_file()
    assert gguf_type(loras_dir / "style" / "hearth-f32.gguf") == "adapter"
    gg_tokens = greedy(gg)
    assert gg_tokens == hf_tokens != base_tokens
    diff = float((gg.logits(hf_tokens[:-1]) - hf_logits).abs().max())
    assert diff < 1e-3, diff  # measured: about 4e-6 (f32 weights, f32 KV cache)

    manager.apply_loras([])
    assert greedy(gg) == base_tokens
    manager.unload()
    assert manager.lora_names == []


def test_llamacpp_gguf_adapter_and_wrong_base(
    manager: ModelManager, loras_dir: Path, converter: Path, tmp_path: Path
):
    gguf_dir = tmp_path / "loras"
    gguf_dir.mkdir()
    shutil.copy(convert_peft_adapter(loras_dir / "style", Path("unused")), gguf_dir / "style.gguf")
    # the converter finds each base model's config.json through the adapter's base_model_name_or_path
    shutil.copy(convert_peft_adapter(loras_dir / "other-base", Path("unused")), gguf_dir / "other.gguf")
    assert [(x.name, x.kind) for x in discover_loras(gguf_dir)] == [
        ("other.gguf", "gguf"),
        ("style.gguf", "gguf"),
    ]

    # llamacpp_HF shares llama.cpp's model class, and so its LoRA support
    model = manager.load("tiny-llama.gguf", "llamacpp_HF", {"cache_type": "f32"})
    ids = model.tokenize(PROMPT)
    base = model.logits(ids).clone()
    manager.apply_loras(resolve_choices(gguf_dir, ["style.gguf"], [1.0]))
    styled = model.logits(ids).clone()
    assert (styled - base).abs().max() > 0.5
    # a context made after the apply (slot 1: CFG's negative prompt) gets the adapters too
    assert same_logits(model.logits(ids, slot=1), styled)
    with pytest.raises(LoraMismatch, match="the adapter was made for 64x"):
        manager.apply_loras(resolve_choices(gguf_dir, ["other.gguf"]))
    assert manager.lora_names == ["style.gguf"] and same_logits(model.logits(ids), styled)

    # a PEFT adapter from the Hub (its base is no local folder): converted with a config made from the GGUF
    hub_style = gguf_dir / "hub-style"
    hub_style.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(loras_dir / "style" / name, hub_style / name)
    config = json.loads((hub_style / "adapter_config.json").read_text())
    (hub_style / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "someone/tiny"})
    )
    manager.apply_loras(resolve_choices(gguf_dir, ["hub-style"]))
    assert same_logits(model.logits(ids), styled)
    with pytest.raises(LoraMismatch, match="the adapter was made for 64x"):
        manager.apply_loras(resolve_choices(gguf_dir, ["other.gguf"]))
    assert manager.lora_names == ["hub-style"] and same_logits(model.logits(ids), styled)
    manager.apply_loras([])
    assert torch.equal(model.logits(ids), base)


def test_transformers_refuses_a_gguf_adapter(
    manager: ModelManager, loras_dir: Path, tmp_path: Path, converter: Path
):
    shutil.copy(convert_peft_adapter(loras_dir / "style", Path("unused")), tmp_path / "style.gguf")
    manager.load("tiny-llama", "Transformers")
    with pytest.raises(LoaderError, match="Transformers loader applies PEFT adapters"):
        manager.apply_loras(resolve_choices(tmp_path, ["style.gguf"]))
    assert manager.lora_names == []


# -- the API (text-generation-webui's routes) ---------------------------------------------------------------
ADMIN = "admin-secret"


@pytest.fixture(scope="module")
def served(models_dir: Path, loras_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(
        models_dir,
        tmp_path_factory.mktemp("user_data"),
        model="tiny-llama",
        params={},
        loras_dir=loras_dir,
        api_key="user-key",
        admin_key=ADMIN,
    ) as s:
        yield s


def test_api_lora_routes(served: Served):
    user = served.client(key="user-key")
    with served.client(key=ADMIN) as c, user:
        assert c.get("/v1/internal/lora/list").json() == {"lora_names": ["other-base", "style"]}
        info = c.post("/v1/internal/lora/load", json={"lora_names": ["style"], "lora_weights": [0.5]}).json()
        assert info["lora_names"] == ["style"] and info["model_name"] == "tiny-llama"
        assert user.get("/v1/internal/model/info").json()["lora_names"] == ["style"]
        assert served.app.models.loras[0].scale == 0.5
        error = assert_error(c.post("/v1/internal/lora/load", json={"lora_names": ["other-base"]}), 400)
        assert "down_proj is 128x256 here" in error["message"]
        assert_error(c.post("/v1/internal/lora/load", json={"lora_names": ["../style"]}), 404)
        assert user.get("/v1/internal/model/info").json()["lora_names"] == ["style"]
        assert c.post("/v1/internal/lora/unload").json()["lora_names"] == []
        assert c.post("/v1/internal/lora/load", json={"lora_names": ["style"]}).json()["lora_names"] == [
            "style"
        ]
        # the API key is not enough: admin routes, as model load/unload
        assert user.get("/v1/internal/lora/list").status_code == 401
        assert user.post("/v1/internal/lora/unload").status_code == 401
    served.app.models.apply_loras([])


# -- downloading an adapter repo ------------------------------------------------------------------------------
def test_adapter_repo_downloads_into_the_lora_folder(
    loras_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fake_hub import FakeHub
    from webui.download import download, main
    from webui.hub import list_repo

    style = loras_dir / "style"
    files = {
        name: (style / name).read_bytes() for name in ("adapter_config.json", "adapter_model.safetensors")
    }
    files["checkpoint-10/adapter_model.safetensors"] = b"a training checkpoint, not the adapter"
    hub = FakeHub()
    hub.add_repo("someone/style-lora", files)
    hub.add_repo(
        "someone/full-model", {"config.json": b"{}", "model.safetensors": b"w", "adapter_config.json": b"{}"}
    )
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub.start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        assert list_repo("someone/style-lora").kind == "lora"
        assert list_repo("someone/full-model").kind == "transformers"  # full weights: a model, not an adapter
        models, loras = tmp_path / "models", tmp_path / "loras"
        path = download("someone/style-lora", models, loras_dir=loras)
        assert path == loras / "someone_style-lora" and not models.exists()
        assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
        assert resolve_lora(loras, "someone_style-lora").kind == "peft"
        assert (
            main(["someone/style-lora", "--models-dir", str(models), "--lora-dir", str(tmp_path / "cli")])
            == 0
        )
        assert resolve_lora(tmp_path / "cli", "someone_style-lora").kind == "peft"
    finally:
        hub.stop()
