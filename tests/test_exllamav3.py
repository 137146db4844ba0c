"""ExLlamaV3 loaders: EXL3 detection, loader choice, parameters, CLI flags, the native sampler mapping (proven
against exllamav3's own sampler module run on the CPU with torch stand-ins for its kernels,
tests/exllamav3_kernels.py, and Hearth's pipeline),
the memory estimate and bench/gpu_check.sh's refusal without a GPU run everywhere; the GPU test converts a tiny
random Llama to EXL3 with exllamav3's converter and compares both loaders token for token.

Without exllamav3 + CUDA the Model's cache bookkeeping is driven through a fake `exllamav3` whose `forward`
computes logits from the whole token history held in the cache (any reuse mistake changes the numbers), with
exllamav3 1.6.5's signatures and the preconditions its code asserts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from loaders import exllamav3_sampling as native
from loaders.exl3_detect import INSTALL_HINT, backend_problem, describe_quantization, is_exl3
from loaders.exllamav2 import ExLlamav2Loader
from loaders.exllamav3 import ExLlamav3Loader, ExLlamav3Model
from loaders.exllamav3_hf import ExLlamav3HFLoader
from loaders.transformers_loader import TransformersLoader
from tests.exllamav3_kernels import real_sampler_module
from webui import memory_estimate
from webui.config import build_parser, parse_settings
from webui.errors import LoaderError
from webui.loader_api import Model, ModelInfo
from webui.models import ModelManager
from webui.plugins import collect_loaders, make_plugin_manager
from webui.sampling import SamplingParams, build_sampler
from webui.sampling.bias import token_bias

ex_sampler = real_sampler_module()  # exllamav3's own sampler (the installed package), CPU kernels

ROOT = Path(__file__).resolve().parent.parent
LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 64,
    "max_position_embeddings": 32768,
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
}
EXL3 = {"quant_method": "exl3", "version": "1.6.5", "bits": 4.0, "head_bits": 6}
TRELLIS = (
    "model.layers.0.self_attn.q_proj.trellis",
    "model.layers.0.self_attn.q_proj.suh",
    "model.embed_tokens.weight",
)


def make_folder(
    root: Path,
    name: str,
    quant: dict | None = None,
    tensors: tuple[str, ...] = ("model.embed_tokens.weight",),
) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps(dict(LLAMA, **({"quantization_config": quant} if quant else {})))
    )
    save_file({t: np.zeros((2, 2), np.float16) for t in tensors}, str(path / "model.safetensors"))
    return path


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {
        "exl3": make_folder(tmp_path, "m-exl3", EXL3),
        "exl3_names": make_folder(tmp_path, "m-exl3-names", tensors=TRELLIS),
        "exl2": make_folder(tmp_path, "m-exl2", {"quant_method": "exl2", "bits": 4.25}),
        "plain": make_folder(tmp_path, "m-plain"),
    }


@pytest.fixture
def loaders3() -> dict:
    """Every built-in loader plus this module's (webui.plugins lists loaders.exllamav3 once the lead adds it)."""
    import loaders.exllamav3 as module

    pm = make_plugin_manager(load_entry_points=False)
    if not pm.is_registered(module):
        pm.register(module, name="loaders.exllamav3")
    return collect_loaders(pm)


def test_detects_exl3_from_config_or_trellis_tensors(folders: dict[str, Path], tmp_path: Path) -> None:
    assert {k: is_exl3(p) for k, p in folders.items()} == {
        "exl3": True,
        "exl3_names": True,
        "exl2": False,
        "plain": False,
    }
    assert describe_quantization(folders["exl3"]) == "EXL3 4.0 bpw (head 6 bits)"
    assert describe_quantization(folders["exl3_names"]) == "EXL3"
    assert describe_quantization(folders["plain"]) == "fp16"
    broken = make_folder(tmp_path, "broken")
    (broken / "model.safetensors").write_bytes(b"\xff" * 4)
    assert not is_exl3(broken) and not is_exl3(tmp_path / "x.gguf")


def test_exl3_folders_go_to_exllamav3(
    folders: dict[str, Path], loaders3: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert loaders3["ExLlamav3"] is ExLlamav3Loader and loaders3["ExLlamav3_HF"] is ExLlamav3HFLoader
    for key in ("exl3", "exl3_names"):
        path = folders[key]
        assert (
            ExLlamav3Loader.score(path)
            > ExLlamav3HFLoader.score(path)
            > max(TransformersLoader.score(path), ExLlamav2Loader.score(path))
        ), key
    assert (
        ExLlamav3Loader.score(folders["plain"])
        == ExLlamav3Loader.score(folders["exl2"])
        == ExLlamav3HFLoader.score(folders["plain"])
        == 0
    )
    monkeypatch.setattr(ExLlamav3Loader, "available", classmethod(lambda cls: (True, "")))
    manager = ModelManager(folders["exl3"].parent, loaders3)
    assert manager.choose_loader(folders["exl3"]) == "ExLlamav3"
    assert [n for n, _ in manager.loader_scores(folders["exl3"])][:2] == ["ExLlamav3", "ExLlamav3_HF"]
    assert manager.choose_loader(folders["plain"]) == "Transformers"


def test_transformers_does_not_take_exl3_folders(folders: dict[str, Path]) -> None:
    assert TransformersLoader.score(folders["exl3"]) == 0


needs_no_backend = pytest.mark.skipif(not backend_problem(), reason="exllamav3 and CUDA are present here")


@needs_no_backend
def test_unavailable_backend_gives_one_clear_message(folders: dict[str, Path], loaders3: dict) -> None:
    ok, message = ExLlamav3Loader.available()
    assert not ok and message.startswith(INSTALL_HINT) and "pip install .[exllamav3]" in message
    manager = ModelManager(folders["exl3"].parent, loaders3)
    with pytest.raises(LoaderError) as caught:
        manager.load("m-exl3", loader="ExLlamav3")
    assert str(caught.value).count("ExLlamaV3 needs an NVIDIA GPU with CUDA") == 1 and manager.model is None
    with pytest.raises(LoaderError, match=r"needs the ExLlamav3 loader: ExLlamaV3 needs an NVIDIA GPU"):
        ModelManager(
            folders["exl3"].parent, {k: v for k, v in loaders3.items() if k != "Transformers"}
        ).choose_loader(folders["exl3"])


def test_parameters_are_declared_and_validated(folders: dict[str, Path]) -> None:
    params = ExLlamav3Loader.resolve_params({})
    assert params == {
        "max_seq_len": 0,
        "exl3_cache_type": "fp16",
        "gpu_split": "",
        "autosplit": False,
        "enable_tp": False,
        "tp_backend": "native",
        "cfg_cache": False,
    }
    assert ExLlamav3HFLoader.params == ExLlamav3Loader.params
    with pytest.raises(
        LoaderError, match=r"exl3_cache_type: 'q1' is not one of fp16, q8, q6, q5, q4, q3, q2"
    ):
        ExLlamav3Loader.resolve_params({"exl3_cache_type": "q1"})
    ExLlamav3Loader.validate(folders["exl3"], ExLlamav3Loader.resolve_params({"gpu_split": "20, 7.5"}))
    for values, message in [
        ({"gpu_split": "20,x"}, "gpu_split: expected GB"),
        ({"autosplit": True, "enable_tp": True}, "autosplit places"),
    ]:
        with pytest.raises(LoaderError, match=message):
            ExLlamav3Loader.validate(folders["exl3"], ExLlamav3Loader.resolve_params(values))
    with pytest.raises(LoaderError, match="ExLlamaV3 loads EXL3 folders"):
        ExLlamav3Loader.validate(folders["exl2"], params)


def test_cli_offers_the_generated_flags(loaders3: dict) -> None:
    help_text = " ".join(build_parser(loaders3).format_help().split())
    for flag in (
        "--exl3-cache-type {fp16,q8,q6,q5,q4,q3,q2,q8_q4,q6_q4,q4_q3}",
        "--tp-backend {native,nccl}",
        "--cfg-cache",
        "--max-seq-len",
        "--gpu-split",
        "--autosplit",
        "--enable-tp",
    ):
        assert flag in help_text
    assert "Loader parameters (ExLlamav3, ExLlamav3_HF)" in help_text
    settings = parse_settings(
        ["--exl3-cache-type", "q8_q4", "--cfg-cache", "--tp-backend", "nccl"], loaders3, None
    )
    assert settings.loader_args == {"exl3_cache_type": "q8_q4", "cfg_cache": True, "tp_backend": "nccl"}


# -- the native sampler mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "reported"),
    [
        ({"xtc_probability": 0.5, "min_p": 0.02}, ["xtc"]),
        ({"dry_multiplier": 0.8}, ["dry"]),
        ({"mirostat_mode": 2}, ["mirostat"]),
        ({"top_n_sigma": 1.0}, ["top_n_sigma"]),
        ({"typical_p": 0.9}, ["typical_p"]),
        ({"dynamic_temperature": True, "dynatemp_low": 0.5, "dynatemp_high": 1.5}, ["dynamic_temperature"]),
        ({"grammar_string": 'root ::= "a"'}, ["grammar_string"]),
        (
            {
                "temperature": 0.7,
                "repetition_penalty": 1.2,
                "sampler_priority": ["temperature", "repetition_penalty"],
            },
            ["sampler_priority"],
        ),
        (
            {
                "presence_penalty": 0.3,
                "frequency_penalty": 0.2,
                "repetition_penalty": 1.2,
                "sampler_priority": ["presence_penalty", "repetition_penalty", "frequency_penalty"],
            },
            ["sampler_priority"],
        ),
    ],
)
def test_settings_exllamav3_cannot_honour_are_reported(settings: dict, reported: list[str]) -> None:
    assert native.unsupported(SamplingParams(**settings)) == reported


def test_steps_follow_hearths_order() -> None:
    params = SamplingParams(
        temperature=0.7,
        top_k=40,
        top_p=0.9,
        min_p=0.05,
        repetition_penalty=1.1,
        repetition_penalty_range=256,
        presence_penalty=0.2,
        logit_bias={5: 2.0},
        custom_token_bans=[7],
    )
    assert native.unsupported(params) == []
    assert native.steps(params, token_bias(params, {2})) == [
        ("SS_BanTokens", {"token_ids": [7]}),
        ("SS_LogitBias", {"logit_bias": {5: 2.0}}),
        ("SS_RepP", {"rep_p": 1.1, "sustain_range": 256, "decay_range": 0}),
        ("SS_PresFreqP", {"pres_p": 0.2, "freq_p": 0.0, "sustain_range": 256, "decay_range": 0}),
        ("SS_Temperature", {"temperature": 0.7}),
        ("SS_TopK", {"top_k": 40}),
        ("SS_TopP", {"top_p": 0.9}),
        ("SS_MinP", {"min_p": 0.05}),
        ("SS_Sample", {}),
    ]
    last = SamplingParams(temperature=1.5, min_p=0.1, temperature_last=True)
    assert [n for n, _ in native.steps(last, {})] == ["SS_MinP", "SS_Temperature", "SS_Sample"]
    greedy = SamplingParams(do_sample=False, top_p=0.5, repetition_penalty=1.2, ban_eos_token=True)
    assert native.steps(greedy, token_bias(greedy, {2})) == [
        ("SS_BanTokens", {"token_ids": [2]}),
        ("SS_RepP", {"rep_p": 1.2, "sustain_range": native.WHOLE_CONTEXT, "decay_range": 0}),
        ("SS_Argmax", {}),
    ]
    assert native.steps(SamplingParams(), {}) == [("SS_Sample", {})]


def exl3_probs(params: SamplingParams, logits: torch.Tensor, history: list[int]) -> torch.Tensor:
    """The distribution exllamav3's CustomSampler samples from: its steps up to the draw, read back from its state."""
    steps = [getattr(ex_sampler, n)(**kw) for n, kw in native.steps(params, token_bias(params, {2}))[:-1]]
    state = ex_sampler.CustomSampler(steps).forward(
        logits.clone().view(1, 1, -1), torch.tensor([history]), 1, None, return_state=True
    )
    S = ex_sampler.custom.SS
    if state.state == S.INIT:
        return torch.softmax(state.in_logits[0].float(), -1)
    sorted_values = (
        state.probs
        if state.state in (S.PROBS, S.PROBS_N, S.PROBS_S, S.PROBS_N_S)
        else torch.softmax(state.logits, -1)
    )
    values = sorted_values[0] / sorted_values[0].sum()
    if state.state in (S.LOGITS_S, S.PROBS_S, S.PROBS_N_S):
        values = torch.zeros_like(values).scatter(0, state.indices[0], values)
    return values


@pytest.mark.parametrize(
    "settings",
    [
        {
            "temperature": 0.7,
            "top_k": 40,
            "top_p": 0.9,
            "min_p": 0.05,
            "repetition_penalty": 1.15,
            "repetition_penalty_range": 6,
            "presence_penalty": 0.3,
            "frequency_penalty": 0.2,
        },
        {
            "temperature": 1.6,
            "min_p": 0.08,
            "temperature_last": True,
            "logit_bias": {11: 3.0},
            "custom_token_bans": [4],
        },
        {"temperature": 0.5, "top_p": 0.6, "sampler_priority": ["top_p", "temperature"]},
        {"top_k": 3, "repetition_penalty": 1.3, "ban_eos_token": True},
    ],
)
def test_native_steps_give_hearths_distribution(settings: dict) -> None:
    params = SamplingParams(**settings)
    assert native.unsupported(params) == []
    history = [3, 9, 9, 17, 2, 30, 9]
    for seed in range(3):
        logits = torch.randn(48, generator=torch.Generator().manual_seed(seed)) * 3
        hearth = build_sampler(params, vocab_size=48, eos_token_ids={2}, prompt_ids=history)
        ours = torch.softmax(hearth.process(torch.tensor([history]), logits[None].clone())[0], -1)
        assert torch.allclose(exl3_probs(params, logits, history), ours, atol=1e-6), settings


# -- the Model's cache bookkeeping, through a fake exllamav3 with 1.6.5's signatures --------------------


def reference_logits(history: list) -> torch.Tensor:
    generator = torch.Generator().manual_seed(hash(tuple(history)) % (2**31))
    return torch.randn(40, generator=generator)  # head width 40 > vocab 32


LINEARS = {"model.layers.0.self_attn.q_proj": (8, 8), "model.layers.0.mlp.down_proj": (8, 16)}


def fake_exllamav3(calls: list, recurrent: bool = False) -> dict[str, types.ModuleType]:
    """`exllamav3` (Config, Model, Cache, CacheLayer_fp16/_quant), `exllamav3.generator.sampler` (the copied
    sampler) and `exllamav3.model.lora` (LoRA): the calls Hearth makes, with the keywords and asserts of 1.6.5."""

    class Config:
        @staticmethod
        def from_directory(directory: str, **kwargs: object) -> Config:
            config = Config()
            data = json.loads((Path(directory) / "config.json").read_text())
            config.architecture, config.vocab_size = data["architectures"][0], data["vocab_size"]
            config.max_position_embeddings = data["max_position_embeddings"]
            calls.append("Config.from_directory")
            return config

    class State:  # a recurrent state: exllamav3/cache/recurrent_util.py checks position == past_len
        def __init__(self, cache: Cache, slot: int) -> None:
            self.cache, self.slot, self.position = cache, slot, 0

    class Model:
        def __init__(self, config: Config) -> None:
            self.config, self.loaded, self.loaded_tp, self.fed = config, False, False, 0
            self.cache_weakrefs: dict = {}
            self.modules_dict = None
            self.active_loras: list = []

        @staticmethod
        def from_config(config: Config, component: str = "text", **kwargs: object) -> Model:
            calls.append(("Model.from_config", kwargs))
            return Model(config)

        def __iter__(self):
            return iter(
                types.SimpleNamespace(key=k, out_features=o, in_features=i) for k, (o, i) in LINEARS.items()
            )

        def get_recurrent_layers(self) -> list:
            return [object()] if recurrent else []

        def load(
            self,
            device: object = None,
            tp_output_device: object = None,
            reserve_per_device: object = None,
            use_per_device: object = None,
            tensor_p: bool = False,
            progressbar: bool = False,
            max_chunk_size: int = 2048,
            max_output_size: int = 32,
            max_output_factor: int = 1,
            callback: object = None,
            generator: bool = True,
            tp_dev_limits: object = None,
            tp_backend: str = "native",
            verbose: bool = False,
            max_batch_size: int = 1,
            tp_options: object = None,
            autosplit_no_forward: bool = False,
            draft_model: object = None,
        ) -> None:
            assert device is None or not (reserve_per_device or use_per_device or tensor_p)
            self.loaded, self.loaded_tp = True, tensor_p
            for cache in self.cache_weakrefs.values():
                cache.initialized = True
            calls.append(
                ("load", device, use_per_device, tensor_p, tp_backend if tensor_p else None, max_chunk_size)
            )

        def warmup(
            self,
            cache: Cache | None = None,
            max_chunk_size: int = 2048,
            max_batch_size: int = 8,
            max_q_len: int = 16,
            long_context: bool = True,
            progressbar: bool = False,
            callback: object = None,
            verbose: bool = False,
        ) -> list:
            assert self.loaded and cache.initialized
            calls.append(("warmup", max_chunk_size, max_batch_size, long_context))
            return []

        def unload(self) -> None:
            calls.append("unload")

        def _step(self, input_ids: torch.Tensor, params: dict, logits: bool) -> torch.Tensor | None:
            assert input_ids.dtype == torch.long and params["attn_mode"] == "flash_attn"
            cache, (bsz, cap), past = params["cache"], params["batch_shape"], params["past_len"]
            assert cache.initialized, "cache made after load: its tensors were never allocated"
            assert bsz == 1 and cap % 256 == 0 and cap <= cache.max_num_tokens
            new = input_ids[0].tolist()
            assert past + len(new) <= cap
            if recurrent:
                states = params.get("recurrent_states")
                if past > 0 and states is None:
                    raise ValueError("Past length given, but no previous state for recurrence in params")
                if states is None:
                    states = params["recurrent_states"] = [cache.get_new_state()]
                assert all(s.position == past for s in states), "recurrent states don't match input past_len"
                for s in states:
                    s.position += len(new)
            loras = tuple((lora.path, lora.scale) for lora in self.active_loras)
            cache.tokens[past : past + len(new)] = [(t, loras) if loras else t for t in new]
            self.fed += len(new)
            if not logits:
                return None
            return torch.stack(
                [reference_logits(cache.tokens[: past + i + 1]) for i in range(len(new))]
            ).unsqueeze(0)

        def prefill(self, input_ids: torch.Tensor, params: dict | None = None) -> None:
            return self._step(input_ids, params, logits=False)

        def forward(self, input_ids: torch.Tensor, params: dict | None = None) -> torch.Tensor:
            return self._step(input_ids, params, logits=True)

    class CacheLayer_fp16:  # noqa: N801
        pass

    class CacheLayer_quant:  # noqa: N801
        pass

    class Cache:
        def __init__(
            self,
            model: Model,
            max_num_tokens: int,
            layer_type: type | None = None,
            max_batch_size: int = 16,
            max_history: int = 0,
            recurrent_dtype: object = None,
            **kwargs: int,
        ) -> None:
            assert max_num_tokens % 256 == 0, "max_num_tokens must be a multiple of 256."
            if layer_type is CacheLayer_quant:
                assert (
                    set(kwargs) <= {"k_bits", "v_bits", "compand_a"}
                    and 2 <= kwargs["k_bits"] <= 8
                    and 2 <= kwargs["v_bits"] <= 8
                )
            else:
                assert not kwargs, "CacheLayer_fp16 takes no further arguments"
            self.model, self.max_num_tokens, self.initialized = model, max_num_tokens, model.loaded
            self.tokens: list = [-1] * max_num_tokens
            self.free_list = deque(range(max_batch_size))
            model.cache_weakrefs[id(self)] = self
            calls.append(
                ("Cache", layer_type.__name__, kwargs.get("k_bits"), kwargs.get("v_bits"), max_num_tokens)
            )

        def get_new_state(self) -> State:
            assert self.free_list, "Cannot create new state: no available slots"
            return State(self, self.free_list.popleft())

        def release_state(self, state: State) -> None:
            self.free_list.appendleft(state.slot)

    class LoRA:
        @staticmethod
        def from_directory(model: Model, directory: str, lora_scaling: float = 1.0) -> LoRA:
            config = json.loads((Path(directory) / "adapter_config.json").read_text())
            config["r"], float(config["lora_alpha"])  # noqa: B018 - KeyError as in LoRA.__init__
            if config.get("fan_in_fan_out"):
                raise ValueError("fan_in_fan_out mode is not supported")
            lora = LoRA()
            lora.model, lora.path, lora.scale = model, Path(directory).name, lora_scaling
            model.active_loras.append(lora)
            calls.append(("LoRA", lora.path, lora_scaling))
            return lora

        def unload(self) -> None:
            self.model.active_loras.remove(self)
            calls.append(("unload_lora", self.path, self.scale))

    root = types.ModuleType("exllamav3")
    root.Config, root.Model, root.Cache = Config, Model, Cache
    root.CacheLayer_fp16, root.CacheLayer_quant = CacheLayer_fp16, CacheLayer_quant
    generator, model_pkg, lora = (
        types.ModuleType(n) for n in ("exllamav3.generator", "exllamav3.model", "exllamav3.model.lora")
    )
    generator.sampler, lora.LoRA, model_pkg.lora = ex_sampler, LoRA, lora
    return {
        "exllamav3": root,
        "exllamav3.generator": generator,
        "exllamav3.generator.sampler": ex_sampler,
        "exllamav3.model": model_pkg,
        "exllamav3.model.lora": lora,
    }


@pytest.fixture
def exl3_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    import transformers

    import loaders.exllamav3 as module

    calls: list = []
    for name, fake in fake_exllamav3(calls).items():
        monkeypatch.setitem(sys.modules, name, fake)
    monkeypatch.setattr(module, "backend_problem", lambda: "")
    tokenizer = types.SimpleNamespace(
        eos_token_id=2,
        bos_token_id=None,
        bos_token=None,
        eos_token="</s>",
        chat_template=None,
        encode=lambda text, add_special_tokens: [ord(c) % 32 for c in text],
    )
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *args, **kwargs: tokenizer)
    return calls


def make_model(calls: list, recurrent: bool = False, cfg: bool = True) -> ExLlamav3Model:
    exl = fake_exllamav3(calls, recurrent)["exllamav3"]
    backend = exl.Model(exl.Config())
    caches = {
        slot: exl.Cache(backend, 256, exl.CacheLayer_fp16, max_batch_size=1)
        for slot in ((0, 1) if cfg else (0,))
    }
    backend.load(device="cuda:0")
    info = ModelInfo(name="t", loader="ExLlamav3", path="t", context_length=64, vocab_size=32)
    return ExLlamav3Model(
        backend, caches, types.SimpleNamespace(bos_token_id=None), info, frozenset({2}), 256
    )


@pytest.mark.parametrize("recurrent", [False, True])
def test_logits_reuse_the_longest_common_prefix_per_slot(recurrent: bool) -> None:
    model = make_model([], recurrent)
    backend = model._model
    steps = [[1, 5, 6, 7], [1, 5, 6, 7, 8], [1, 5, 9], [1, 5, 9], [1, 5, 9, 4], [3, 4]]
    # a recurrent state cannot roll back: it restarts whenever the request does not extend what is held
    fed = [4, 1, 3, 0, 1, 2] if recurrent else [4, 1, 1, 0, 1, 2]
    for ids, expected in zip(steps, fed, strict=True):
        before = backend.fed
        logits = model.logits(ids)
        assert backend.fed - before == expected and torch.equal(logits, reference_logits(ids)[:32])
    assert model.evaluated_tokens == sum(fed)
    assert torch.equal(model.logits([1, 2], slot=1), reference_logits([1, 2])[:32])  # CFG: the second cache
    assert torch.equal(model.logits([3, 4]), reference_logits([3, 4])[:32])
    with pytest.raises(Exception, match="do not fit max_seq_len 64"):
        model.logits(list(range(65)))
    with pytest.raises(Exception, match="reload with cfg_cache on"):
        make_model([], recurrent, cfg=False).logits([1], slot=1)


def test_sequence_logits_is_one_forward_matching_logits() -> None:
    model = make_model([])
    model.logits([9, 9, 9])
    ids = [1, 5, 6, 7, 8]
    fed = model._model.fed
    got = model.sequence_logits(ids)
    assert model._model.fed - fed == len(ids) and got.shape == (5, 32) and got.dtype == torch.float32
    assert torch.equal(got, torch.stack([reference_logits(ids[: i + 1])[:32] for i in range(5)]))
    assert torch.equal(got, Model.sequence_logits(make_model([]), ids))
    fed = model._model.fed
    assert torch.equal(model.logits(ids), got[-1]) and model._model.fed == fed  # slot 0 now holds ids


def test_load_drives_exllamav3_as_model_init_does(folders: dict[str, Path], exl3_calls: list) -> None:
    model = ExLlamav3Loader().load(folders["exl3"], ExLlamav3Loader.resolve_params({}))
    # caches before load (load allocates them); one GPU unless a split is asked for
    assert exl3_calls == [
        "Config.from_directory",
        ("Model.from_config", {}),
        ("Cache", "CacheLayer_fp16", None, None, 8192),
        ("load", "cuda:0", None, False, None, 2048),
        ("warmup", 2048, 1, False),
    ]
    assert (model.info.context_length, model.info.vocab_size, model.info.quantization) == (
        8192,
        64,
        "EXL3 4.0 bpw (head 6 bits)",
    )
    assert model.native_sampler == "ExLlamaV3"
    exl3_calls.clear()
    params = {"max_seq_len": 1000, "exl3_cache_type": "q8_q4", "cfg_cache": True, "gpu_split": "20,7.5"}
    model = ExLlamav3HFLoader().load(folders["exl3"], ExLlamav3HFLoader.resolve_params(params))
    assert exl3_calls[2:5] == [("Cache", "CacheLayer_quant", 8, 4, 1024)] * 2 + [
        ("load", None, [20.0, 7.5], False, None, 2048)
    ]
    assert (
        model.native_sampler is None
        and model.native_generate([1], SamplingParams(), 0) is None
        and model.n_ctx == 1000
    )
    exl3_calls.clear()
    ExLlamav3Loader().load(
        folders["exl3"], ExLlamav3Loader.resolve_params({"enable_tp": True, "tp_backend": "nccl"})
    )
    assert exl3_calls[-2] == ("load", None, None, True, "nccl", 2048)
    ExLlamav3Loader().load(folders["exl3"], ExLlamav3Loader.resolve_params({"autosplit": True}))
    assert exl3_calls[-2] == ("load", None, None, False, None, 2048)


def test_native_loop_runs_exllamav3s_sampler_steps(exl3_calls: list) -> None:
    model = make_model(exl3_calls)
    params = SamplingParams(
        do_sample=False, logit_bias={5: 30.0}, custom_token_bans=[9], repetition_penalty=1.5
    )
    stream = model.native_generate([1, 4], params, seed=7)
    got = [next(stream) for _ in range(3)]
    hearth, ids = build_sampler(params, vocab_size=32, eos_token_ids={2}), [1, 4]
    for token in got:
        assert token == int(hearth.process(torch.tensor([ids]), reference_logits(ids)[None, :32])[0].argmax())
        ids.append(token)
    sampled = SamplingParams(temperature=0.8, top_k=5, min_p=0.05)
    first = list(zip(range(4), model.native_generate([1, 4], sampled, seed=3), strict=False))
    assert first == list(
        zip(range(4), model.native_generate([1, 4], sampled, seed=3), strict=False)
    )  # seeded
    assert all(int(reference_logits([1, 4])[:32].topk(5).indices.eq(t).any()) for _, t in first[:1])
    assert model.native_generate([1], SamplingParams(xtc_probability=0.5), 0) is None
    assert (
        model.native_generate([1], SamplingParams(logit_bias={99: 1.0}), 0) is None
    )  # Hearth names the bad id


def write_peft(root: Path, name: str, shapes: dict[str, tuple[int, int]], **config: object) -> Path:
    path = root / name
    path.mkdir()
    settings = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": sorted({m.split(".")[-1] for m in shapes}),
    }
    (path / "adapter_config.json").write_text(json.dumps({**settings, **config}))
    tensors = {}
    for module, (out, inp) in shapes.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = np.zeros((4, inp), np.float16)
        tensors[f"base_model.model.{module}.lora_B.weight"] = np.zeros((out, 4), np.float16)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


def test_set_loras_loads_and_unloads_adapters_and_clears_the_caches(exl3_calls: list, tmp_path: Path) -> None:
    style, other = (
        write_peft(tmp_path, "style", LINEARS),
        write_peft(tmp_path, "other", {"model.layers.0.mlp.down_proj": (8, 16)}),
    )
    model = make_model(exl3_calls)
    model.logits([1, 5, 6])
    model.set_loras([(style, 0.5)])
    assert ("LoRA", "style", 0.5) in exl3_calls
    fed = model._model.fed
    assert torch.equal(
        model.logits([1, 5, 6]), reference_logits([(t, (("style", 0.5),)) for t in [1, 5, 6]])[:32]
    )
    assert model._model.fed == fed + 3  # the prefix computed without the adapter was dropped
    exl3_calls.clear()
    model.set_loras([(other, 2.0)])
    assert exl3_calls == [("LoRA", "other", 2.0), ("unload_lora", "style", 0.5)]
    with pytest.raises(LoaderError, match="LoRA wide does not fit this model"):
        model.set_loras([(write_peft(tmp_path, "wide", {"model.layers.0.self_attn.q_proj": (8, 16)}), 1.0)])
    with pytest.raises(LoaderError, match=r"LoRA fifo: ExLlamaV3 cannot apply it \(fan_in_fan_out"):
        model.set_loras([(style, 1.0), (write_peft(tmp_path, "fifo", LINEARS, fan_in_fan_out=True), 1.0)])
    assert [lora.path for lora in model._model.active_loras] == [
        "other"
    ]  # the failed set left the model as it was
    model.set_loras([])
    assert model._model.active_loras == [] and torch.equal(
        model.logits([3, 4]), reference_logits([3, 4])[:32]
    )


# -- the memory estimate from an EXL3 folder's headers --------------------------------------------------


def test_memory_estimate_reads_exl3_headers(tmp_path: Path) -> None:
    path = make_folder(
        tmp_path,
        "m",
        EXL3,
        tensors=(
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.trellis",
            "model.layers.1.mlp.down_proj.trellis",
            "lm_head.weight",
        ),
    )
    facts = memory_estimate.read_model(path)
    fp16 = memory_estimate.estimate(path, "ExLlamav3", {"max_seq_len": 300})
    # 300 tokens -> two 256-token pages; 2 layers * 2 KV heads * head_dim 16, K and V at 2 bytes each
    assert fp16.kv_cache == 512 * 2 * 2 * 16 * (2 + 2) and fp16.weights_cpu == facts.input_bytes == 8
    assert (
        fp16.weights_gpu == facts.weight_bytes - 8
        and fp16.vram == fp16.weights_gpu + fp16.kv_cache + fp16.overhead
    )
    q4 = memory_estimate.estimate(
        path, "ExLlamav3_HF", {"max_seq_len": 300, "exl3_cache_type": "q4", "cfg_cache": True}
    )
    # CacheLayer_quant: per 32 values, `bits` int32 words and one fp16 scale; cfg_cache doubles it
    assert q4.kv_cache == 2 * 512 * 2 * 2 * 16 * 2 * (4 * 4 + 2) // 32


# -- bench/gpu_check.sh on a machine without a GPU ------------------------------------------------------


@pytest.mark.parametrize(
    ("visible", "smi", "reason"),
    [
        (None, "#!/bin/sh\nexit 9\n", "nvidia-smi fails"),
        (None, "#!/bin/sh\nexit 0\n", "nvidia-smi lists no device"),
        ("", "#!/bin/sh\necho 'GPU 0: H200'\n", "CUDA_VISIBLE_DEVICES hides every device"),
    ],
)
def test_gpu_check_refuses_at_once_without_a_gpu(
    tmp_path: Path, visible: str | None, smi: str, reason: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    (tmp_path / "nvidia-smi").write_text(smi)
    (tmp_path / "nvidia-smi").chmod(0o755)
    start = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2 and time.monotonic() - start < 20
    assert f"no NVIDIA GPU here ({reason})" in result.stderr and "Nothing was installed" in result.stderr
    assert "installed" not in result.stdout.replace("Nothing was installed", "")


def test_gpu_check_steps_report_failures_and_timeouts_in_one_table(capsys: pytest.CaptureFixture) -> None:
    from bench import gpu_check

    gpu_check.ROWS.clear()
    deadline = time.monotonic() + 60
    assert gpu_check.step("fine", 5, deadline, lambda: gpu_check.ROWS.append(("fine", "ok", "", "PASS")))
    assert not gpu_check.step("broken", 5, deadline, lambda: 1 / 0)
    assert not gpu_check.step("slow", 1, deadline, lambda: time.sleep(5))
    assert not gpu_check.step("late", 5, time.monotonic() + 5, lambda: pytest.fail("ran past the deadline"))
    assert [(r[0], r[3]) for r in gpu_check.ROWS] == [
        ("fine", "PASS"),
        ("broken", "FAIL"),
        ("slow", "FAIL"),
        ("late", "SKIP"),
    ]
    assert "StepTimeout: over 1 s" in gpu_check.ROWS[2][1] and "ZeroDivisionError" in gpu_check.ROWS[1][1]
    capsys.readouterr()
    gpu_check.print_table()
    table = capsys.readouterr().out.strip().splitlines()
    assert (
        len(table) == 7
        and table[1].split() == ["check", "result", "goal", "verdict"]
        and table[-1] == table[0]
    )
    gpu_check.ROWS.clear()


# -- on a GPU: a tiny random Llama converted to EXL3 by exllamav3 itself ---------------------------------

gpu = pytest.mark.skipif(bool(backend_problem()), reason="needs exllamav3 and a CUDA GPU")


@pytest.fixture(scope="module")
def exl3_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.model_factory import TinyConfig, build_tokenizer, random_weights, write_hf_folder

    root = tmp_path_factory.mktemp("exl3")
    # exllamav3's quantizer needs every linear's width a multiple of 128 (exl3_lib/quantize.py): k/v_proj 2 x 64
    cfg = TinyConfig(hidden=256, heads=4, kv_heads=2, intermediate=512)
    tokenizer = build_tokenizer(cfg.vocab)
    source = write_hf_folder(
        root / "tiny-fp16", cfg, tokenizer, random_weights(cfg, tokenizer.get_vocab_size())
    )
    out = root / "tiny-exl3"
    cmd = [
        sys.executable,
        "-m",
        "exllamav3.conversion.convert_model",
        "-i",
        str(source),
        "-o",
        str(out),
        "-w",
        str(root / "work"),
        "-b",
        "4.0",
        "-hb",
        "6",
        "-cr",
        "8",
        "-cc",
        "256",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and (out / "config.json").is_file(), (
        result.stdout[-3000:] + result.stderr[-3000:]
    )
    return out


@pytest.mark.gpu
@pytest.mark.slow
@gpu
def test_native_and_hf_paths_agree_on_greedy_tokens(exl3_folder: Path, loaders3: dict) -> None:
    from webui.generation import GenerationCore, GenerationRequest

    assert (
        is_exl3(exl3_folder)
        and ModelManager(exl3_folder.parent, loaders3).choose_loader(exl3_folder) == "ExLlamav3"
    )
    greedy = SamplingParams(do_sample=False)
    tokens = {}
    for name in ("ExLlamav3", "ExLlamav3_HF"):
        manager = ModelManager(exl3_folder.parent, loaders3)
        manager.load(
            exl3_folder.name,
            loader=name,
            params={"max_seq_len": 512, "exl3_cache_type": "q4", "cfg_cache": True},
        )
        core = GenerationCore(manager)
        tokens[name] = core.generate(
            GenerationRequest(prompt="Once upon a time", max_new_tokens=24, sampling=greedy)
        ).token_ids
        if name == "ExLlamav3_HF":
            guided = greedy.model_copy(
                update={"guidance_scale": 1.5, "negative_prompt": "The quick brown fox"}
            )
            assert (
                core.generate(
                    GenerationRequest(prompt="Once upon a time", max_new_tokens=8, sampling=guided)
                ).usage.completion_tokens
                > 0
            )
        manager.unload()
    assert len(tokens["ExLlamav3"]) > 0 and tokens["ExLlamav3"] == tokens["ExLlamav3_HF"]
