"""Model discovery, loader selection, loading and unloading on the tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from loaders.llamacpp import ntk_rope_freq_base
from webui.errors import LoaderError, ModelNotFound
from webui.models import ModelManager, discover_models


def test_discovery_lists_gguf_files_and_model_folders(models_dir: Path, tmp_path: Path):
    names = [m.name for m in discover_models(models_dir)]
    assert names == ["tiny-llama", "tiny-llama.gguf"]

    (tmp_path / "good.gguf").write_bytes(b"GGUF")
    (tmp_path / "big-00001-of-00002.gguf").write_bytes(b"GGUF")
    (tmp_path / "big-00002-of-00002.gguf").write_bytes(b"GGUF")
    (tmp_path / "partial.gguf.incomplete").write_bytes(b"GG")
    (tmp_path / ".hidden.gguf").write_bytes(b"GGUF")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert [m.name for m in discover_models(tmp_path)] == ["big-00001-of-00002.gguf", "good.gguf", "hf"]


def test_loader_is_chosen_from_the_path(manager: ModelManager, models_dir: Path):
    assert manager.choose_loader(models_dir / "tiny-llama.gguf") == "llama.cpp"
    assert manager.choose_loader(models_dir / "tiny-llama") == "Transformers"
    assert [n for n, _ in manager.loader_scores(models_dir / "tiny-llama.gguf")] == ["llama.cpp", "llamacpp_HF"]


def test_unknown_model_and_loader_errors_list_what_exists(manager: ModelManager):
    with pytest.raises(ModelNotFound, match="tiny-llama.gguf"):
        manager.resolve("no-such-model")
    with pytest.raises(LoaderError, match="llama.cpp.*Transformers"):
        manager.load("tiny-llama.gguf", loader="vllm")


def test_bad_loader_parameter_is_rejected_before_anything_is_freed(manager: ModelManager):
    manager.load("tiny-llama.gguf", params={"n_ctx": 256})
    with pytest.raises(LoaderError, match="n_ctx: expected int"):
        manager.load("tiny-llama.gguf", params={"n_ctx": "lots"})
    with pytest.raises(LoaderError, match="has no parameter bogus"):
        manager.load("tiny-llama.gguf", params={"bogus": 1})
    with pytest.raises(LoaderError, match="needs flash_attn"):
        manager.load("tiny-llama.gguf", params={"cache_type": "q8_0"})
    assert manager.model_name == "tiny-llama.gguf"  # still loaded and usable
    assert manager.require().tokenize("Hello")


def test_corrupt_gguf_gives_a_clear_error(tmp_path: Path, loaders: dict):
    (tmp_path / "broken.gguf").write_bytes(b"NOPE" + b"\0" * 100)
    (tmp_path / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\0" * 10)
    manager = ModelManager(tmp_path, loaders)
    with pytest.raises(LoaderError, match="bad magic"):
        manager.load("broken.gguf")
    with pytest.raises(LoaderError, match="could not load truncated.gguf"):
        manager.load("truncated.gguf")
    assert manager.model is None


def test_gguf_model_info(manager: ModelManager):
    model = manager.load("tiny-llama.gguf", params={"n_ctx": 512})
    info = model.info
    assert (info.architecture, info.loader, info.quantization) == ("llama", "llama.cpp", "ALL_F32")
    assert info.context_length == 512 and info.extra["trained_context_length"] == 1024
    assert info.vocab_size == model.vocab_size > 300
    assert info.parameters and info.parameters > 100_000
    assert info.chat_template and "add_generation_prompt" in info.chat_template


def test_transformers_model_info_and_unload(manager: ModelManager):
    model = manager.load("tiny-llama")
    info = model.info
    assert (info.architecture, info.loader, info.quantization) == ("LlamaForCausalLM", "Transformers", "float32")
    assert info.context_length == 1024 and info.vocab_size == model.vocab_size
    assert info.chat_template
    manager.unload()
    assert manager.model is None and manager.model_name is None


def test_default_context_is_the_models_own(manager: ModelManager):
    assert manager.load("tiny-llama.gguf").n_ctx == 1024


def test_ntk_alpha_formula():
    assert ntk_rope_freq_base(1.0) == 10000
    assert ntk_rope_freq_base(2.65) == pytest.approx(10000 * 2.65 ** (64 / 63))
    assert 26_000 < ntk_rope_freq_base(2.65) < 27_500


def test_auto_gpu_layers_without_a_gpu_is_zero(manager: ModelManager, models_dir: Path):
    from loaders.llamacpp import AUTO_LAYERS
    from webui.memory_estimate import auto_gpu_layers

    assert auto_gpu_layers(models_dir / "tiny-llama.gguf", {"n_ctx": 512, "cache_type": "f16", "flash_attn": False}) == 0
    model = manager.load("tiny-llama.gguf", params={"n_gpu_layers": AUTO_LAYERS})
    assert model.tokenize("hi")


def test_a_loader_that_cannot_load_the_file_is_refused_before_unloading(manager: ModelManager):
    """Issue 13: Transformers for a GGUF (or llama.cpp for an HF folder) used to unload the working model
    first and fail afterwards."""
    manager.load("tiny-llama.gguf", params={"n_ctx": 256})
    with pytest.raises(LoaderError, match=r"Transformers loader cannot load tiny-llama\.gguf .*HF folders.*llama\.cpp"):
        manager.load("tiny-llama.gguf", loader="Transformers")
    with pytest.raises(LoaderError, match=r"llama\.cpp loader cannot load tiny-llama .*GGUF.*Transformers"):
        manager.load("tiny-llama", loader="llama.cpp")
    assert (manager.model_name, manager.loader_name, manager.load_params["n_ctx"]) == ("tiny-llama.gguf", "llama.cpp", 256)
    model = manager.require()  # still loaded and usable
    assert model.logits(model.tokenize("Hello")).shape == (model.vocab_size,)


def test_a_load_that_fails_after_unloading_says_so_and_leaves_no_model(models_dir: Path, tmp_path: Path, loaders: dict):
    (tmp_path / "tiny-llama.gguf").symlink_to(models_dir / "tiny-llama.gguf")
    (tmp_path / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\0" * 10)  # passes every check
    manager = ModelManager(tmp_path, loaders)
    manager.load("tiny-llama.gguf")
    with pytest.raises(LoaderError, match=r"truncated\.gguf.*; the previous model was unloaded \(tiny-llama\.gguf\)"):
        manager.load("truncated.gguf")
    assert (manager.model, manager.model_name, manager.loader_name, manager.load_params) == (None, None, None, {})
    with pytest.raises(LoaderError, match="could not load truncated.gguf") as without:  # nothing was loaded
        manager.load("truncated.gguf")
    assert "previous model" not in str(without.value)
