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
import types
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
from webui.errors import LoaderError
from webui.loader_api import Model, ModelInfo
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


def test_gptq_other_than_4_bit_is_left_to_transformers(tmp_path: Path) -> None:
    eight = make_folder(tmp_path, "m-gptq8", {"quant_method": "gptq", "bits": 8, "group_size": 128})
    assert describe_quantization(eight) == "GPTQ 8-bit g128"
    assert ExLlamav2Loader.score(eight) < TransformersLoader.score(eight)
    with pytest.raises(LoaderError, match="ExLlamaV2 runs 4-bit GPTQ only, this folder is 8-bit"):
        ExLlamav2Loader.validate(eight, ExLlamav2Loader.resolve_params({}))
    old = make_folder(tmp_path, "m-gptq3-old", extra_files={"quantize_config.json": {"bits": 3, "group_size": 128}})
    assert ExLlamav2Loader.score(old) < TransformersLoader.score(old)


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
    assert "--cache-type {f16,f32,q8_0,q4_0}" in help_text  # llama.cpp's flag keeps its own choices
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
    ({"mirostat_mode": 2, "dynamic_temperature": True, "dynatemp_low": 0.5, "dynatemp_high": 1.5}, ["sampler_priority"]),
    ({"xtc_probability": 0.5, "min_p": 0.02}, ["xtc"]),  # exllamav2 0.3.2's xtc_cpu needs sorted candidates
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
    xtc = SamplingParams(xtc_probability=0.5, xtc_threshold=0.2, min_p=0.02)
    assert native.unsupported(xtc) == ["xtc"]  # Hearth's XTC runs on ExLlamaV2's logits instead
    assert native.settings_fields(xtc, set())["xtc_probability"] == 0.0


# -- the Model's cache bookkeeping, with a history-dependent stand-in forward ---------------------

class HistoryCache:
    """Holds tokens by position like ExLlamaV2's cache; positions past current_seq_len are stale. With LoRA
    adapters applied, a position holds (token, adapters) as its K/V does: computed under those adapters."""

    def __init__(self) -> None:
        self.current_seq_len, self.tokens = 0, [-1] * 64


LINEARS = {"model.layers.0.self_attn.q_proj": (8, 8), "model.layers.0.mlp.down_proj": (8, 16)}  # name -> (out, in)


class HistoryForward:
    """ExLlamaV2.forward's contract: reads the cache up to current_seq_len, writes new tokens, advances it,
    and returns logits [1, q_len, width] (the last position only with last_id_only). The keywords are
    exllamav2 0.3.2's (exllamav2/model.py `ExLlamaV2.forward`), with no **kwargs, so a wrong one is a
    TypeError; like embedding.py and linear.py (lm_head), it reads loras[0] whenever loras is not None."""

    def __init__(self) -> None:
        self.fed = 0
        self.tp_context = None
        self.loras_seen: list[list | None] = []  # the loras= of every call
        self.modules_dict = {name: types.SimpleNamespace(key=name, out_features=out, in_features=inp)
                             for name, (out, inp) in LINEARS.items()}

    def forward(self, input_ids: torch.Tensor, cache: HistoryCache | None = None, input_mask: torch.Tensor | None = None,
                preprocess_only: bool = False, last_id_only: bool = False, loras: list | None = None,
                return_last_state: bool = False, position_offsets: torch.Tensor | None = None,
                abort_event: object = None, cpu_logits: bool = False) -> torch.Tensor | None:
        assert loras is None or (loras and all(lora.loaded for lora in loras)), "loras[0] of an empty list / unloaded"
        self.loras_seen.append(loras)
        new = input_ids[0].tolist()
        start = cache.current_seq_len
        assert start + len(new) <= len(cache.tokens), "Total sequence length exceeds cache size in model.forward"
        cache.tokens[start : start + len(new)] = [with_loras(t, loras) for t in new]
        cache.current_seq_len += len(new)
        self.fed += len(new)
        if preprocess_only:
            return None
        rows = [reference_logits(cache.tokens[: start + i + 1]) for i in range(len(new))]
        return torch.stack(rows[-1:] if last_id_only else rows).unsqueeze(0)

    def unload(self) -> None:
        pass


def with_loras(token: int, loras: list | None) -> int | tuple:
    """What a cache position holds: the token, and the adapters (file, scale) its K/V was computed under."""
    return (token, tuple((lora.lora_path, lora.lora_scaling) for lora in loras)) if loras else token


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


# -- the load sequence and the native loop, against a stand-in with exllamav2 0.3.2's signatures ------

SETTINGS_FIELDS_0_3_2 = frozenset({  # ExLlamaV2Sampler.Settings, exllamav2/generator/sampler.py
    "token_repetition_penalty", "token_repetition_range", "token_repetition_decay", "token_frequency_penalty",
    "token_presence_penalty", "temperature", "smoothing_factor", "min_temp", "max_temp", "temp_exponent", "top_k",
    "top_p", "top_a", "min_p", "tfs", "typical", "skew", "temperature_last", "mirostat", "mirostat_tau",
    "mirostat_eta", "mirostat_mu", "token_bias", "cfg_scale", "post_sampling_hooks", "dry_allowed_length",
    "dry_base", "dry_multiplier", "dry_sequence_breakers", "dry_range", "dry_max_ngram", "ngram_trie",
    "ngram_index", "ngram_history", "xtc_probability", "xtc_threshold", "xtc_ignore_tokens"})


def fake_exllamav2(calls: list) -> tuple[types.ModuleType, types.ModuleType]:
    """`exllamav2` and `exllamav2.generator` with the 0.3.2 signatures Hearth calls (a wrong keyword raises
    TypeError) and the preconditions the real code asserts; every call is appended to `calls`."""

    class ExLlamaV2Config:
        def __init__(self, model_dir: str | None = None) -> None:
            self.model_dir, self.scale_pos_emb, self.scale_alpha_value = model_dir, 1.0, 1.0
            self.no_flash_attn, self.no_xformers, self.no_sdpa = False, True, False  # as with EXLLAMA_NO_XFORMERS set

        def prepare(self, no_tensors: bool = False) -> None:
            assert self.model_dir is not None
            calls.append("prepare")
            self.architecture, self.vocab_size, self.max_seq_len, self.original_max_seq_len = "LlamaForCausalLM", 64, 32768, 32768
            self.num_experts_per_token = None
            self.scale_pos_emb = 2.0  # config.json's rope_scaling {"type": "linear", "factor": 2.0}

        def arch_compat_overrides(self, quiet: bool = False, warn_only: bool = False) -> None:
            calls.append(("arch_compat_overrides", self.no_flash_attn, self.no_xformers, self.no_sdpa))

    class ExLlamaV2:
        def __init__(self, config: ExLlamaV2Config, lazy_load: bool = False, archparams: object = None) -> None:
            self.config, self.loaded, self.tp_context = config, False, None
            calls.append(("ExLlamaV2", config.max_seq_len))

        def load(self, gpu_split: list[float] | None = None, lazy: bool = False, stats: bool = False,
                 callback: object = None, callback_gen: object = None, progress: bool = False) -> None:
            self.loaded = True
            calls.append(("load", gpu_split))

        def load_tp(self, gpu_split: list[float] | None = None, callback: object = None, callback_gen: object = None,
                    progress: bool = False, expect_cache_tokens: int = 0, expect_cache_base: type | None = None) -> None:
            self.loaded, self.tp_context = True, object()
            calls.append(("load_tp", gpu_split, expect_cache_base.__name__ if expect_cache_base else None))

        def load_autosplit(self, cache: Cache, reserve_vram: int | None = None, last_id_only: bool = False,
                           callback: object = None, callback_gen: object = None, progress: bool = False) -> None:
            assert cache.lazy, "load_autosplit needs a cache constructed with lazy = True"
            self.loaded = True
            calls.append(("load_autosplit", type(cache).__name__))

        def unload(self) -> None:
            calls.append("unload")

    class Cache:
        def __init__(self, model: ExLlamaV2, batch_size: int = 1, max_seq_len: int = -1, copy_from: object = None,
                     lazy: bool = False, num_key_value_heads: int | None = None, fixed_device: int | None = None) -> None:
            assert lazy or model.loaded, "a non-lazy cache allocates on the devices the loaded model maps"
            self.lazy, self.current_seq_len = lazy, 0
            calls.append((type(self).__name__, lazy))

    module = types.ModuleType("exllamav2")
    for name in ("ExLlamaV2Cache", "ExLlamaV2Cache_8bit", "ExLlamaV2Cache_Q8", "ExLlamaV2Cache_Q6", "ExLlamaV2Cache_Q4"):
        setattr(module, name, type(name, (Cache,), {}))

    class ExLlamaV2Cache_TP:  # noqa: N801 - exllamav2's name
        def __init__(self, model: ExLlamaV2, base: type = module.ExLlamaV2Cache, batch_size: int = 1,
                     max_seq_len: int = -1) -> None:
            assert model.tp_context is not None, "Cannot create TP cache unless model is loaded with load_tp()"
            self.current_seq_len = 0
            calls.append(("ExLlamaV2Cache_TP", base.__name__))

    class ExLlamaV2Tokenizer:
        def __init__(self, config: ExLlamaV2Config, lazy_init: bool = True, force_json: bool = False,
                     force_spm: bool = False) -> None:
            calls.append("ExLlamaV2Tokenizer")

    class _Settings:
        def __setattr__(self, name: str, value: object) -> None:
            assert name in SETTINGS_FIELDS_0_3_2, f"ExLlamaV2Sampler.Settings has no field {name}"
            object.__setattr__(self, name, value)

    class ExLlamaV2Sampler:
        Settings = _Settings

        @staticmethod
        def sample(logits: torch.Tensor, settings: _Settings, sequence_ids: torch.Tensor, random: float,
                   tokenizer: object, prefix_token: object = None, return_top_tokens: int = 0,
                   blocked_tokens: object = None, filters: object = None, filter_prefer_eos: bool = False,
                   sync: bool = False) -> tuple:
            assert logits.dtype == torch.float and logits.shape[:2] == (1, 1) and logits.is_contiguous()
            assert sequence_ids.dtype == torch.long and sequence_ids.shape[0] == 1 and 0 <= random < 1
            bias = settings.token_bias
            assert bias is None or (bias.dtype == torch.float and bias.shape == logits.shape[-1:])
            if bias is not None:
                logits += bias  # ext_c.fast_fadd_cpu, in place
            calls.append(("sample", sequence_ids[0].tolist(), settings.top_k))
            token = logits[0, 0].argmax().view(1, 1)
            return token, None, None, torch.ones(1, 1), False

    class ExLlamaV2Lora:
        """exllamav2/lora.py 0.3.2: from_directory prefers adapter_model.bin, then .safetensors; __init__ reads
        adapter_config.json's r and lora_alpha (KeyError without them) and refuses fan_in_fan_out."""

        @staticmethod
        def from_directory(model: object, directory: str, lora_scaling: float = 1.0) -> ExLlamaV2Lora:
            for weights in ("adapter_model.bin", "adapter_model.safetensors"):
                if (Path(directory) / weights).exists():
                    return ExLlamaV2Lora(model, str(Path(directory) / "adapter_config.json"),
                                         str(Path(directory) / weights), lora_scaling)
            raise ValueError(f"No LoRA found in {directory}")

        def __init__(self, model: object, lora_config_path: str, lora_path: str, lora_scaling: float = 1.0) -> None:
            read_config = json.loads(Path(lora_config_path).read_text())
            self.lora_r, self.lora_alpha = read_config["r"], float(read_config["lora_alpha"])
            if read_config.get("fan_in_fan_out"):
                raise ValueError(" ## Error: fan_in_fan_out mode not supported.")
            self.model, self.lora_path, self.lora_scaling, self.loaded = model, lora_path, lora_scaling, True
            calls.append(("ExLlamaV2Lora", Path(lora_path).parent.name, lora_scaling))

        def unload(self) -> None:
            assert self.loaded, "unloaded twice"
            self.loaded = False
            calls.append(("unload_lora", Path(self.lora_path).parent.name, self.lora_scaling))

    module.ExLlamaV2Config, module.ExLlamaV2, module.ExLlamaV2Cache_TP = ExLlamaV2Config, ExLlamaV2, ExLlamaV2Cache_TP
    module.ExLlamaV2Lora = ExLlamaV2Lora
    module.ExLlamaV2Tokenizer = ExLlamaV2Tokenizer
    generator = types.ModuleType("exllamav2.generator")
    generator.ExLlamaV2Sampler = ExLlamaV2Sampler
    module.generator = generator
    return module, generator


@pytest.fixture
def exl_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    import transformers

    import loaders.exllamav2 as exl_module

    calls: list = []
    module, generator = fake_exllamav2(calls)
    monkeypatch.setitem(sys.modules, "exllamav2", module)
    monkeypatch.setitem(sys.modules, "exllamav2.generator", generator)
    monkeypatch.setattr(exl_module, "backend_problem", lambda: "")
    tokenizer = types.SimpleNamespace(eos_token_id=2, bos_token_id=None, bos_token=None, eos_token="</s>", chat_template=None)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *args, **kwargs: tokenizer)
    return calls


def test_load_drives_exllamav2_as_its_own_model_init_does(folders: dict[str, Path], exl_calls: list) -> None:
    model = ExLlamav2Loader().load(folders["exl2"], ExLlamav2Loader.resolve_params({}))
    config = model._model.config
    # prepare() first, options next, arch_compat_overrides() last and before the model is built; neutral values
    # keep what prepare() read (linear rope_scaling) and what __init__ read from EXLLAMA_NO_* variables
    assert exl_calls == ["prepare", ("arch_compat_overrides", False, True, False), ("ExLlamaV2", 8192), ("load", None),
                         ("ExLlamaV2Cache", False), "ExLlamaV2Tokenizer"]
    assert (config.scale_pos_emb, config.scale_alpha_value, config.num_experts_per_token) == (2.0, 1.0, None)
    assert model.info.context_length == 8192 and model.info.vocab_size == 64
    assert model.info.extra["trained_context_length"] == 32768
    model.unload()

    exl_calls.clear()
    params = {"max_seq_len": 4096, "compress_pos_emb": 4, "alpha_value": 2.5, "flash_attn": False, "no_sdpa": True,
              "gpu_split": "20,7.5", "exl2_cache_type": "q4", "num_experts_per_token": 3}
    config = ExLlamav2Loader().load(folders["exl2"], ExLlamav2Loader.resolve_params(params))._model.config
    assert exl_calls[:5] == ["prepare", ("arch_compat_overrides", True, True, True), ("ExLlamaV2", 4096),
                             ("load", [20.0, 7.5]), ("ExLlamaV2Cache_Q4", False)]
    assert (config.scale_pos_emb, config.scale_alpha_value, config.num_experts_per_token) == (4.0, 2.5, 3)


def test_autosplit_and_tensor_parallel_build_their_caches_as_exllamav2_requires(folders: dict[str, Path],
                                                                               exl_calls: list) -> None:
    model = ExLlamav2Loader().load(folders["exl2"], ExLlamav2Loader.resolve_params({"autosplit": True, "exl2_cache_type": "fp8"}))
    assert exl_calls[3:5] == [("ExLlamaV2Cache_8bit", True), ("load_autosplit", "ExLlamaV2Cache_8bit")]
    model._slot(1)  # CFG's second cache, once the model is placed: allocated at once
    assert exl_calls[-1] == ("ExLlamaV2Cache_8bit", False)

    exl_calls.clear()
    model = ExLlamav2Loader().load(folders["exl2"], ExLlamav2Loader.resolve_params({"enable_tp": True, "exl2_cache_type": "q6"}))
    assert exl_calls[3:5] == [("load_tp", None, "ExLlamaV2Cache_Q6"), ("ExLlamaV2Cache_TP", "ExLlamaV2Cache_Q6")]
    model._slot(1)
    assert exl_calls[-1] == ("ExLlamaV2Cache_TP", "ExLlamaV2Cache_Q6")


def test_native_loop_calls_the_sampler_as_exllamav2_defines_it(exl_calls: list) -> None:
    model, _, _ = make_model()
    model._tokenizer = types.SimpleNamespace(bos_token_id=None, encode=lambda text, add_special_tokens: [ord(c) % 32 for c in text])
    params = SamplingParams(do_sample=False, logit_bias={5: 30.0}, custom_token_bans=[9])
    stream = model.native_generate([1, 4], params, seed=7)
    got = [next(stream) for _ in range(3)]
    ids, expected = [1, 4], []
    for _ in range(3):
        logits = reference_logits(ids)
        logits[5] += 30.0
        logits[9] = float("-inf")
        expected.append(int(logits.argmax()))
        ids.append(expected[-1])
    assert got == expected == [5, 5, 5]
    assert [c for c in exl_calls if c[0] == "sample"] == [("sample", ids[: 2 + i], 1) for i in range(3)]
    # exllamav2's DRY with a range cannot start from a single token (apply_dry indexes an empty history)
    dry = SamplingParams(dry_multiplier=0.8, dry_penalty_last_n=64)
    assert native.unsupported(dry) == [] and model.native_generate([1], dry, seed=0) is None
    assert model.native_generate([1, 4], dry, seed=0) is not None


# -- logits at every position and LoRA adapters, through the stand-in forward -----------------------

def test_sequence_logits_is_one_forward_matching_logits_position_by_position() -> None:
    model, backend, caches = make_model()
    model.logits([9, 9, 9, 9, 9, 9])  # slot 0 holds something else: sequence_logits must not build on it
    model.logits([1, 2], slot=1)
    ids = [1, 5, 6, 7, 8]
    calls_before, fed_before = len(backend.loras_seen), backend.fed
    got = model.sequence_logits(ids)
    assert len(backend.loras_seen) - calls_before == 1 and backend.fed - fed_before == len(ids)  # one pass
    assert got.shape == (5, 32) and got.dtype == torch.float32
    reference, _, _ = make_model()
    assert torch.equal(got, torch.stack([reference.logits(ids[: i + 1]) for i in range(len(ids))]))
    assert torch.equal(got, Model.sequence_logits(make_model()[0], ids))  # the default, a prefix at a time
    # slot 0 now holds ids: asking again evaluates nothing, one more token evaluates one
    fed = backend.fed
    assert torch.equal(model.logits(ids), got[-1]) and backend.fed == fed
    assert torch.equal(model.logits([*ids, 3]), reference_logits([*ids, 3])[:32]) and backend.fed == fed + 1
    assert model.evaluated_tokens == 6 + 2 + 5 + 1 and caches[1].current_seq_len == 2  # slot 1 untouched
    with pytest.raises(Exception, match="empty sequence"):
        model.sequence_logits([])
    with pytest.raises(Exception, match="65 tokens do not fit max_seq_len 64"):
        model.sequence_logits(list(range(65)))
    fed = backend.fed
    model.logits([*ids, 3])  # the refused calls left slot 0 as it was
    assert backend.fed == fed


def write_peft(root: Path, name: str, shapes: dict[str, tuple[int, int]], **config: object) -> Path:
    """A PEFT LoRA folder as `save_pretrained` writes it: r=4 factors for each module (out, in)."""
    path = root / name
    path.mkdir()
    settings = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": sorted({m.split(".")[-1] for m in shapes})}
    (path / "adapter_config.json").write_text(json.dumps({**settings, **config}))
    tensors = {}
    for module, (out, inp) in shapes.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = np.zeros((4, inp), np.float16)
        tensors[f"base_model.model.{module}.lora_B.weight"] = np.zeros((out, 4), np.float16)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


def under(adapters: list[tuple[Path, float]], ids: list[int], width: int = 32) -> torch.Tensor:
    """The stand-in's logits after `ids` with every position computed under `adapters` (file, scale); the
    first `width` (the vocabulary; the native sampler sees the whole padded head)."""
    applied = tuple((str(path / "adapter_model.safetensors"), scale) for path, scale in adapters)
    logits = reference_logits([(t, applied) if applied else t for t in ids])
    return logits[:width] if width else logits


def test_set_loras_passes_the_adapters_to_every_forward_and_clears_the_caches(exl_calls: list, tmp_path: Path) -> None:
    style = write_peft(tmp_path, "style", LINEARS)
    other = write_peft(tmp_path, "other", {"model.layers.0.mlp.down_proj": (8, 16)})
    model, backend, caches = make_model()
    model._tokenizer = types.SimpleNamespace(bos_token_id=None, encode=lambda text, add_special_tokens: [ord(c) % 32 for c in text])
    assert model.supports_loras and ExLlamav2HFLoader.model_class.supports_loras
    model.logits([1, 5, 6])
    model.logits([1, 2], slot=1)  # CFG's cache
    model.set_loras([(style, 0.5)])
    assert ("ExLlamaV2Lora", "style", 0.5) in exl_calls
    assert caches[0].current_seq_len == caches[1].current_seq_len == 0  # prefixes computed without it are gone
    fed = backend.fed
    assert torch.equal(model.logits([1, 5, 6]), under([(style, 0.5)], [1, 5, 6])) and backend.fed == fed + 3
    assert torch.equal(model.logits([1, 2], slot=1), under([(style, 0.5)], [1, 2]))
    assert torch.equal(model.sequence_logits([1, 5]), torch.stack([under([(style, 0.5)], [1]), under([(style, 0.5)], [1, 5])]))
    stream = model.native_generate([1, 4], SamplingParams(do_sample=False), seed=0)
    assert next(stream) == int(under([(style, 0.5)], [1, 4], width=0).argmax())
    next(stream)
    paths = [[lora.lora_path for lora in seen] for seen in backend.loras_seen[-7:]]
    assert paths == [[str(style / "adapter_model.safetensors")]] * 7  # prefill + last, twice (slots 0, 1), sequence_logits, 2 native steps

    exl_calls.clear()
    model.set_loras([(style, 0.5), (other, 2.0)])  # style is kept as loaded, other is added
    assert exl_calls == [("ExLlamaV2Lora", "other", 2.0)] and caches[0].current_seq_len == 0
    both = [(style, 0.5), (other, 2.0)]
    assert torch.equal(model.logits([3, 4]), under(both, [3, 4]))
    assert [len(seen) for seen in backend.loras_seen[-2:]] == [2, 2]

    exl_calls.clear()
    model.set_loras([(style, 1.0)])  # a new scale is a new load (exllamav2 pre-scales lora_B); the rest unloaded
    assert exl_calls == [("ExLlamaV2Lora", "style", 1.0), ("unload_lora", "style", 0.5), ("unload_lora", "other", 2.0)]
    assert torch.equal(model.logits([3, 4]), under([(style, 1.0)], [3, 4]))
    fed = backend.fed
    model.set_loras([(style, 1.0)])  # the same set: nothing reloaded, the cache kept
    assert exl_calls[-1] == ("unload_lora", "other", 2.0) and torch.equal(model.logits([3, 4]), under([(style, 1.0)], [3, 4]))
    assert backend.fed == fed

    model.set_loras([])  # [] removes them all: the base model's logits exactly, loras=None (not [])
    assert exl_calls[-1] == ("unload_lora", "style", 1.0) and caches[0].current_seq_len == 0
    assert torch.equal(model.logits([3, 4]), reference_logits([3, 4])[:32]) and backend.loras_seen[-1] is None
    assert torch.equal(model.sequence_logits([3, 4])[-1], reference_logits([3, 4])[:32])


def test_set_loras_refuses_what_exllamav2_cannot_apply_and_keeps_the_model(exl_calls: list, tmp_path: Path) -> None:
    import gguf

    style = write_peft(tmp_path, "style", LINEARS)
    model, backend, caches = make_model()
    model.set_loras([(style, 1.0)])
    model.logits([1, 5, 6])
    adapter = tmp_path / "style.gguf"
    writer = gguf.GGUFWriter(str(adapter), "llama")
    writer.add_type("adapter")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    refused = [
        (adapter, "LoRA style.gguf: ExLlamaV2 cannot apply GGUF LoRA adapters; it loads PEFT adapter folders"),
        (write_peft(tmp_path, "wide", {"model.layers.0.self_attn.q_proj": (8, 16)}),
         "LoRA wide does not fit this model: model.layers.0.self_attn.q_proj is 8x8 here, the adapter was made for 8x16"),
        (write_peft(tmp_path, "k", {"model.layers.0.self_attn.k_proj": (8, 8)}),
         "it targets model.layers.0.self_attn.k_proj, which the model does not have"),
        (write_peft(tmp_path, "fifo", LINEARS, fan_in_fan_out=True), r"LoRA fifo: ExLlamaV2 cannot apply it \(fan_in_fan_out"),
        (write_peft(tmp_path, "no-alpha", LINEARS, lora_alpha=None), r"LoRA no-alpha: ExLlamaV2 cannot apply it"),
        (tmp_path / "nothing", "LoRA nothing: not a PEFT adapter folder"),
    ]
    (tmp_path / "no-alpha" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    fits = write_peft(tmp_path, "fits", LINEARS)
    for path, message in refused:
        exl_calls.clear()
        with pytest.raises(LoaderError, match=message):
            model.set_loras([(fits, 1.0), (path, 1.0)])
        loaded = [c for c in exl_calls if c[0] == "ExLlamaV2Lora"]
        # an adapter loaded before the failure is unloaded again; the applied set and the caches stay
        assert [c for c in exl_calls if c[0] == "unload_lora"] == [("unload_lora", n, s) for _, n, s in loaded]
        fed = backend.fed
        assert torch.equal(model.logits([1, 5, 6]), under([(style, 1.0)], [1, 5, 6])) and backend.fed == fed
    exl_calls.clear()
    backend.tp_context = object()  # loaded with enable_tp: exllamav2's TP layers ignore loras=
    with pytest.raises(LoaderError, match="do not work with enable_tp"):
        model.set_loras([(fits, 1.0)])
    model.set_loras([])  # removing them still works
    assert exl_calls == [("unload_lora", "style", 1.0)]
    model.set_loras([])
    exl_calls.clear()
    backend.tp_context = None
    model.set_loras([(style, 1.0)])
    model.unload()  # the adapters go with the model
    assert exl_calls == [("ExLlamaV2Lora", "style", 1.0), ("unload_lora", "style", 1.0)]


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
