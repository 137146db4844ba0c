"""ExLlamaV2 loaders: folder detection, loader choice, parameters, CLI flags and the native sampler mapping
run everywhere; the GPU part converts a tiny random Llama to EXL2 and compares both loaders token for token.

Without exllamav2 + CUDA the backend cannot run, so the cache-reuse bookkeeping of the Model is driven
through a stand-in `forward` that computes logits from the whole token history (any reuse mistake changes
the numbers); the GPU tests drive the same code on the real backend.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from loaders import exllamav2_sampling as native
from loaders.exl2_detect import INSTALL_HINT, backend_problem, describe_quantization, quant_format
from loaders.exllamav2 import ExLlamav2Loader, ExLlamav2Model
from loaders.exllamav2_hf import ExLlamav2HFLoader
from loaders.transformers_loader import TransformersLoader
from webui.config import build_parser, parse_settings
from webui.loader_api import LoaderError, ModelInfo
from webui.models import ModelManager
from webui.sampling import SamplingParams

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64, "max_position_embeddings": 512}


def make_folder(root: Path, name: str, quant: dict | None = None, tensors: tuple[str, ...] = ("model.embed_tokens.weight",),
                extra_files: dict[str, dict] | None = None) -> Path:
    """A model folder as a download leaves it: config.json, one small safetensors file, maybe more JSON."""
    path = root / name
    path.mkdir(parents=True)
    config = dict(LLAMA, **({"quantization_config": quant} if quant else {}))
    (path / "config.json").write_text(json.dumps(config))
    save_file({t: np.zeros((2, 2), np.float16) for t in tensors}, str(path / "model.safetensors"))
    for file_name, content in (extra_files or {}).items():
        (path / file_name).write_text(json.dumps(content))
    return path


EXL2_TENSORS = ("model.layers.0.self_attn.q_proj.q_weight", "model.layers.0.self_attn.q_proj.q_scale")
GPTQ_TENSORS = ("model.layers.0.self_attn.q_proj.qweight", "model.layers.0.self_attn.q_proj.qzeros")


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {
        "exl2": make_folder(tmp_path, "m-exl2", {"quant_method": "exl2", "bits": 4.25}),
        "exl2_old": make_folder(tmp_path, "m-exl2-old", tensors=EXL2_TENSORS),
        "gptq": make_folder(tmp_path, "m-gptq", {"quant_method": "gptq", "bits": 4, "group_size": 128}),
        "gptq_autogptq": make_folder(tmp_path, "m-gptq-old", extra_files={"quantize_config.json": {"bits": 4, "group_size": 32}}),
        "gptq_names": make_folder(tmp_path, "m-gptq-names", tensors=GPTQ_TENSORS),
        "awq": make_folder(tmp_path, "m-awq", {"quant_method": "awq"}),
        "plain": make_folder(tmp_path, "m-plain"),
    }


def test_detects_exl2_and_gptq_from_config_or_tensor_names(folders: dict[str, Path], tmp_path: Path) -> None:
    expected = {"exl2": "exl2", "exl2_old": "exl2", "gptq": "gptq", "gptq_autogptq": "gptq", "gptq_names": "gptq",
                "awq": "", "plain": ""}
    assert {key: quant_format(path) for key, path in folders.items()} == expected
    assert describe_quantization(folders["exl2"]) == "EXL2 4.25 bpw"
    assert describe_quantization(folders["gptq"]) == "GPTQ 4-bit g128"
    assert describe_quantization(folders["gptq_autogptq"]) == "GPTQ 4-bit g32"
    assert describe_quantization(folders["plain"]) == "fp16"
    broken = make_folder(tmp_path, "broken")
    (broken / "model.safetensors").write_bytes(b"\xff" * 4)  # truncated download: no crash, just unknown
    assert quant_format(broken) == ""


def test_scores_rank_exllamav2_above_transformers_only_for_quantized_folders(folders: dict[str, Path], tmp_path: Path) -> None:
    for key in ("exl2", "exl2_old", "gptq", "gptq_autogptq", "gptq_names"):
        path = folders[key]
        assert ExLlamav2Loader.score(path) > ExLlamav2HFLoader.score(path) > TransformersLoader.score(path), key
    plain = folders["plain"]
    assert TransformersLoader.score(plain) > ExLlamav2Loader.score(plain) > ExLlamav2HFLoader.score(plain) > 0
    assert ExLlamav2Loader.score(folders["awq"]) < TransformersLoader.score(folders["awq"])
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    bin_only = tmp_path / "bin-only"
    bin_only.mkdir()
    (bin_only / "config.json").write_text(json.dumps(LLAMA))
    (bin_only / "pytorch_model.bin").write_bytes(b"")
    assert ExLlamav2Loader.score(gguf) == ExLlamav2Loader.score(bin_only) == ExLlamav2HFLoader.score(gguf) == 0


def test_both_loaders_are_registered(loaders: dict) -> None:
    assert loaders["ExLlamav2"] is ExLlamav2Loader and loaders["ExLlamav2_HF"] is ExLlamav2HFLoader


needs_no_backend = pytest.mark.skipif(not backend_problem(), reason="exllamav2 and CUDA are present here")


@needs_no_backend
def test_unavailable_backend_gives_one_clear_message(folders: dict[str, Path], loaders: dict) -> None:
    ok, message = ExLlamav2Loader.available()
    assert not ok and message.startswith(INSTALL_HINT)
    manager = ModelManager(folders["exl2"].parent, loaders)
    with pytest.raises(LoaderError) as caught:
        manager.load("m-exl2", loader="ExLlamav2")
    assert str(caught.value).count("ExLlamaV2 needs an NVIDIA GPU with CUDA and `pip install .[exllamav2]`") == 1
    with pytest.raises(LoaderError, match=r"ExLlamaV2 needs an NVIDIA GPU"):  # direct use says the same, once
        ExLlamav2HFLoader().load(folders["exl2"], ExLlamav2HFLoader.resolve_params({}))
    assert manager.model is None


@needs_no_backend
def test_choosing_a_loader_for_exl2_without_backend_names_what_to_install(folders: dict[str, Path], loaders: dict) -> None:
    manager = ModelManager(folders["exl2"].parent, loaders)
    with pytest.raises(LoaderError, match=r"needs the ExLlamav2 loader: ExLlamaV2 needs an NVIDIA GPU"):
        manager.choose_loader(folders["exl2"])


def test_manager_picks_exllamav2_for_quantized_folders_when_available(folders: dict[str, Path], loaders: dict,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ExLlamav2Loader, "available", classmethod(lambda cls: (True, "")))
    manager = ModelManager(folders["exl2"].parent, loaders)
    assert manager.choose_loader(folders["exl2"]) == "ExLlamav2"
    assert manager.choose_loader(folders["gptq_autogptq"]) == "ExLlamav2"
    assert manager.choose_loader(folders["plain"]) == "Transformers"
    assert [n for n, _ in manager.loader_scores(folders["exl2"])][:2] == ["ExLlamav2", "ExLlamav2_HF"]


def test_parameters_are_declared_and_validated(folders: dict[str, Path], tmp_path: Path) -> None:
    params = ExLlamav2Loader.resolve_params({})
    assert params["exl2_cache_type"] == "fp16" and params["max_seq_len"] == 0 and params["autosplit"] is False
    assert {p.name for p in ExLlamav2Loader.params} >= {
        "max_seq_len", "exl2_cache_type", "gpu_split", "autosplit", "enable_tp", "alpha_value", "compress_pos_emb",
        "flash_attn", "no_xformers", "no_sdpa", "num_experts_per_token"}
    assert params["flash_attn"] is True  # shares llama.cpp's name (a --no-flash-attn flag would collide)
    assert ExLlamav2HFLoader.params == ExLlamav2Loader.params
    with pytest.raises(LoaderError, match=r"exl2_cache_type: 'q3' is not one of fp16, fp8, q8, q6, q4"):
        ExLlamav2Loader.resolve_params({"exl2_cache_type": "q3"})
    with pytest.raises(LoaderError, match="has no parameter cache_type"):
        ExLlamav2Loader.resolve_params({"cache_type": "q4"})
    assert ExLlamav2Loader.resolve_params({"exl2_cache_type": "q4", "max_seq_len": "4096"})["max_seq_len"] == 4096
    ExLlamav2Loader.validate(folders["exl2"], ExLlamav2Loader.resolve_params({"gpu_split": "20, 7.5"}))
    bad = [({"gpu_split": "20,lots"}, "gpu_split: expected GB"), ({"gpu_split": "20,0"}, "positive"),
           ({"autosplit": True, "gpu_split": "10"}, "autosplit places the model itself"),
           ({"autosplit": True, "enable_tp": True}, "autosplit places the model itself")]
    for values, message in bad:
        with pytest.raises(LoaderError, match=message):
            ExLlamav2Loader.validate(folders["exl2"], ExLlamav2Loader.resolve_params(values))
    with pytest.raises(LoaderError, match="config.json and \\*.safetensors"):
        ExLlamav2Loader.validate(tmp_path / "nothing.gguf", params)


def test_cli_offers_the_generated_flags(loaders: dict) -> None:
    help_text = " ".join(build_parser(loaders).format_help().split())
    for flag in ("--max-seq-len", "--exl2-cache-type {fp16,fp8,q8,q6,q4}", "--gpu-split", "--autosplit", "--enable-tp",
                 "--flash-attn", "--no-flash-attn", "--no-xformers", "--no-sdpa", "--num-experts-per-token"):
        assert flag in help_text
    assert "Loader parameters (ExLlamav2, ExLlamav2_HF)" in help_text
    assert "--cache-type {f16,q8_0,q4_0}" in help_text  # llama.cpp's flag keeps its own choices
    settings = parse_settings(["--exl2-cache-type", "q4", "--autosplit", "--alpha-value", "2.5"], loaders, None)
    assert settings.loader_args == {"exl2_cache_type": "q4", "autosplit": True, "alpha_value": 2.5}


# -- the native sampler mapping --------------------------------------------------------------------

def test_common_presets_map_exactly_onto_exllamav2_settings() -> None:
    params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.1,
                            repetition_penalty_range=256, presence_penalty=0.2)
    assert native.unsupported(params) == []
    fields = native.settings_fields(params, {5})
    assert fields["temperature"] == 0.7 and fields["temperature_last"] is False
    assert (fields["top_k"], fields["top_p"], fields["min_p"], fields["typical"], fields["tfs"]) == (40, 0.9, 0.05, 0.0, 0.0)
    assert (fields["token_repetition_penalty"], fields["token_repetition_range"], fields["token_presence_penalty"]) == (1.1, 256, 0.2)
    neutral = native.settings_fields(SamplingParams(), set())  # exllamav2's own defaults are not neutral
    assert (neutral["temperature"], neutral["top_k"], neutral["top_p"], neutral["token_repetition_penalty"]) == (1.0, 0, 1.0, 1.0)
    assert neutral["token_repetition_range"] == -1 and neutral["dry_multiplier"] == 0 and neutral["mirostat"] is False
    greedy = native.settings_fields(SamplingParams(do_sample=False, top_p=0.5, repetition_penalty=1.2), set())
    assert greedy["top_k"] == 1 and greedy["top_p"] == 1.0 and greedy["token_repetition_penalty"] == 1.2


def test_temperature_goes_where_hearths_order_puts_it() -> None:
    last = SamplingParams(temperature=1.5, min_p=0.1, temperature_last=True)
    assert native.unsupported(last) == [] and native.settings_fields(last, set())["temperature_last"] is True
    moved = SamplingParams(temperature=1.5, min_p=0.1, sampler_priority=["min_p", "temperature"])
    assert native.unsupported(moved) == [] and native.settings_fields(moved, set())["temperature_last"] is True
    between = SamplingParams(temperature=1.5, top_k=20, min_p=0.1, sampler_priority=["top_k", "temperature", "min_p"])
    assert native.unsupported(between) == ["sampler_priority"]
    dynamic = SamplingParams(dynamic_temperature=True, dynatemp_low=0.5, dynatemp_high=1.5, top_p=0.9)
    assert native.unsupported(dynamic) == ["sampler_priority"]  # Hearth: before top_p; ExLlamaV2: after it
    dynamic_last = dynamic.model_copy(update={"temperature_last": True})
    fields = native.settings_fields(dynamic_last, set())
    assert native.unsupported(dynamic_last) == [] and (fields["min_temp"], fields["max_temp"], fields["temperature"]) == (0.5, 1.5, 1.0)


@pytest.mark.parametrize(("settings", "reported"), [
    ({"epsilon_cutoff": 3}, ["epsilon_cutoff"]),
    ({"top_n_sigma": 1.0}, ["top_n_sigma"]),
    ({"smoothing_factor": 0.3}, ["quadratic_sampling"]),
    ({"no_repeat_ngram_size": 3}, ["no_repeat_ngram"]),
    ({"mirostat_mode": 1}, ["mirostat_mode"]),
    ({"mirostat_mode": 2, "xtc_probability": 0.5}, ["sampler_priority"]),
    ({"temperature": 0.005}, ["temperature"]),
    ({"dry_multiplier": 0.8, "dry_penalty_last_n": 16}, ["dry_penalty_last_n"]),
    ({"repetition_penalty": 1.2, "logit_bias": {3: 2.0}}, ["logit_bias"]),
    ({"presence_penalty": 0.3, "repetition_penalty": 1.2, "sampler_priority": ["presence_penalty", "repetition_penalty"]},
     ["sampler_priority"]),
    ({"grammar_string": 'root ::= "a"'}, ["grammar_string"]),
])
def test_settings_exllamav2_cannot_honour_are_reported(settings: dict, reported: list[str]) -> None:
    assert native.unsupported(SamplingParams(**settings)) == reported


def test_supported_extras_map_through() -> None:
    params = SamplingParams(mirostat_mode=2, mirostat_tau=4.0, dry_multiplier=0.8, dry_penalty_last_n=0,
                            repetition_penalty=1.1, custom_token_bans=[7])
    assert native.unsupported(params) == []
    fields = native.settings_fields(params, {1, 2})
    assert fields["mirostat"] is True and fields["mirostat_tau"] == 4.0
    assert fields["dry_multiplier"] == 0.8 and fields["dry_range"] == 0 and fields["dry_sequence_breakers"] == {1, 2}
    xtc = native.settings_fields(SamplingParams(xtc_probability=0.5, xtc_threshold=0.2, min_p=0.02), set())
    assert (xtc["xtc_probability"], xtc["xtc_threshold"], xtc["min_p"]) == (0.5, 0.2, 0.02)


# -- the Model's cache bookkeeping, with a history-dependent stand-in forward ---------------------

class HistoryCache:
    """Holds tokens by position like ExLlamaV2's cache; positions past current_seq_len are stale."""

    def __init__(self) -> None:
        self.current_seq_len, self.tokens = 0, [-1] * 64


class HistoryForward:
    """ExLlamaV2.forward's contract: reads the cache up to current_seq_len, writes new tokens, advances it."""

    def __init__(self) -> None:
        self.fed = 0

    def forward(self, ids: torch.Tensor, cache: HistoryCache, preprocess_only: bool = False) -> torch.Tensor | None:
        new = ids[0].tolist()
        start = cache.current_seq_len
        cache.tokens[start : start + len(new)] = new
        cache.current_seq_len += len(new)
        self.fed += len(new)
        return None if preprocess_only else reference_logits(cache.tokens[: cache.current_seq_len]).view(1, 1, -1)

    def unload(self) -> None:
        pass


def reference_logits(history: list[int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(hash(tuple(history)) % (2**31))
    return torch.randn(40, generator=generator)  # head width 40 > vocab 32, as exllamav2 pads the head


def make_model() -> tuple[ExLlamav2Model, HistoryForward, list[HistoryCache]]:
    backend, caches = HistoryForward(), []

    def new_cache() -> HistoryCache:
        caches.append(HistoryCache())
        return caches[-1]

    info = ModelInfo(name="t", loader="ExLlamav2", path="t", context_length=64, vocab_size=32)
    model = ExLlamav2Model(backend, new_cache(), new_cache, tokenizer=None, ex_tokenizer=None, info=info, eos=frozenset({2}))
    return model, backend, caches


def test_logits_reuse_the_longest_common_prefix_per_slot() -> None:
    model, backend, caches = make_model()
    steps = [[1, 5, 6, 7], [1, 5, 6, 7, 8], [1, 5, 9], [1, 5, 9], [3, 4]]
    fed = [4, 1, 1, 0, 2]  # tokens evaluated per call: only what is past the shared prefix
    for ids, expected in zip(steps, fed, strict=True):
        before = backend.fed
        logits = model.logits(ids)
        assert backend.fed - before == expected
        assert logits.shape == (32,) and torch.equal(logits, reference_logits(ids)[:32])
    assert model.evaluated_tokens == sum(fed) and len(caches) == 1
    negative = model.logits([1, 2], slot=1)  # CFG's negative prompt gets its own cache on first use
    assert len(caches) == 2 and torch.equal(negative, reference_logits([1, 2])[:32])
    assert torch.equal(model.logits([3, 4]), reference_logits([3, 4])[:32]) and caches[0].current_seq_len == 2
    with pytest.raises(Exception, match="do not fit max_seq_len 64"):
        model.logits(list(range(65)))


def test_token_bias_covers_bans_and_eos_at_head_width() -> None:
    model, _, _ = make_model()
    params = SamplingParams(logit_bias={3: 1.5}, custom_token_bans=[4], ban_eos_token=True)
    bias = model._token_bias(params, 40)
    assert bias.shape == (40,) and bias[3] == 1.5 and bias[4] == float("-inf") and bias[2] == float("-inf")
    assert model._token_bias(SamplingParams(), 40) is None


# -- on a GPU: a tiny random Llama converted to EXL2 by exllamav2 itself --------------------------

gpu = pytest.mark.skipif(bool(backend_problem()), reason="needs exllamav2 and a CUDA GPU")


@pytest.fixture(scope="module")
def exl2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.model_factory import TinyConfig, build_tokenizer, random_weights, write_hf_folder

    root = tmp_path_factory.mktemp("exl2")
    cfg = TinyConfig()
    tokenizer = build_tokenizer(cfg.vocab)
    source = write_hf_folder(root / "tiny-fp16", cfg, tokenizer, random_weights(cfg, tokenizer.get_vocab_size()))
    out = root / "tiny-exl2"
    cmd = [sys.executable, "-m", "exllamav2.conversion.convert_exl2", "-i", str(source), "-o", str(root / "work"),
           "-cf", str(out), "-b", "6.0", "-hb", "8", "-l", "256", "-ml", "256", "-r", "4", "-mr", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and (out / "config.json").is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.mark.gpu
@pytest.mark.slow
@gpu
def test_native_and_hf_paths_agree_on_greedy_tokens(exl2_folder: Path, loaders: dict) -> None:
    from webui.generation import GenerationCore, GenerationRequest

    assert quant_format(exl2_folder) == "exl2" and ModelManager(exl2_folder.parent, loaders).choose_loader(exl2_folder) == "ExLlamav2"
    greedy = SamplingParams(do_sample=False)
    tokens = {}
    for name in ("ExLlamav2", "ExLlamav2_HF"):
        manager = ModelManager(exl2_folder.parent, loaders)
        manager.load(exl2_folder.name, loader=name, params={"max_seq_len": 512, "exl2_cache_type": "q4"})
        core = GenerationCore(manager)
        tokens[name] = core.generate(GenerationRequest(prompt="Once upon a time", max_new_tokens=24, sampling=greedy)).token_ids
        if name == "ExLlamav2_HF":  # CFG: the negative prompt runs in the second cache
            guided = greedy.model_copy(update={"guidance_scale": 1.5, "negative_prompt": "The quick brown fox"})
            finished = core.generate(GenerationRequest(prompt="Once upon a time", max_new_tokens=8, sampling=guided))
            assert finished.usage.completion_tokens > 0
        manager.unload()
    assert len(tokens["ExLlamav2"]) > 0 and tokens["ExLlamav2"] == tokens["ExLlamav2_HF"]
