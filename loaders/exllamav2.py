"""ExLlamaV2 loader (exllamav2 0.3.x): EXL2 and GPTQ folders on NVIDIA GPUs, with ExLlamaV2's own sampler.

exllamav2 is imported only inside `load()`: importing it JIT-compiles CUDA kernels, and the app, the
CLI and the tests must work on machines without it. Detection and parameter checks live in
`loaders.exl2_detect` for the same reason.

Hearth drives `ExLlamaV2.forward` directly rather than a generator class: each slot keeps the token ids
its cache holds, so a request reuses the longest common prefix with the previous one (a chat's next turn
evaluates only the new tokens), and slot 1 holds the CFG negative prompt in a second cache. The native
path samples with `ExLlamaV2Sampler.sample` on the same cache, so both paths share one evaluation loop.

LoRA adapters are PEFT folders loaded with `ExLlamaV2Lora.from_directory` and passed as `loras=` to every
`forward` (exllamav2 0.3.2 keeps each adapter's tensors beside the base layers and applies only the ones
named in a call), so the base weights never change and `[]` gives the base model back exactly.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loaders import exllamav2_sampling as native
from loaders.exl2_detect import (
    GPTQ_BITS,
    backend_problem,
    describe_quantization,
    gptq_bits,
    is_safetensors_folder,
    parse_gpu_split,
    quant_format,
    read_json,
)
from loaders.hf_tokenized import HFTokenized
from loaders.lora_exllamav2 import ExLlamaV2Adapters
from webui.errors import LoaderError, ModelRuntimeError
from webui.loader_api import Loader, LoaderParam, Model, ModelInfo, common_prefix_length
from webui.plugins import hookimpl
from webui.sampling.vocabulary import sequence_breaker_ids

if TYPE_CHECKING:
    import torch

    from webui.sampling import SamplingParams

#: Hearth's cache_type names (text-generation-webui's) -> exllamav2 cache classes.
CACHE_TYPES = {"fp16": "ExLlamaV2Cache", "fp8": "ExLlamaV2Cache_8bit", "q8": "ExLlamaV2Cache_Q8",
               "q6": "ExLlamaV2Cache_Q6", "q4": "ExLlamaV2Cache_Q4"}
MAX_DEFAULT_CTX = 8192


@dataclass
class _Slot:
    """One cache and the token ids it holds; `logits` are the raw logits after the last id."""

    cache: Any
    ids: list[int] = field(default_factory=list)
    logits: torch.Tensor | None = None


class ExLlamav2Model(HFTokenized, Model):
    """A loaded ExLlamaV2 model. Slot 0 uses the cache built at load; slot 1 (CFG) gets its own on first use."""

    prefer_native = True

    def __init__(self, model: Any, cache: Any, new_cache: Callable[[], Any], tokenizer: Any, ex_tokenizer: Any,
                 info: ModelInfo, eos: frozenset[int]) -> None:
        import torch

        self._torch = torch
        self._model = model
        self._new_cache = new_cache
        self._tokenizer = tokenizer
        self._ex_tokenizer = ex_tokenizer
        self._slots = {0: _Slot(cache)}
        self._eos = eos
        self._adapters = ExLlamaV2Adapters()
        self.info = info

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    def logits(self, ids: Sequence[int], slot: int = 0) -> torch.Tensor:
        return self._sync(ids, slot)[: self.vocab_size]

    def _slot(self, slot: int) -> _Slot:
        if slot not in self._slots:
            try:
                self._slots[slot] = _Slot(self._new_cache())
            except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
                raise ModelRuntimeError(f"no GPU memory for a second cache (slot {slot}, used by CFG): {exc}") from exc
        return self._slots[slot]

    def _sync(self, ids: Sequence[int], slot: int) -> torch.Tensor:
        """Make slot's cache hold `ids` and return the raw logits (head width) after the last one."""
        torch = self._torch
        ids = list(ids)
        if not ids:
            raise ModelRuntimeError("cannot evaluate an empty token sequence")
        if len(ids) > self.n_ctx:
            raise ModelRuntimeError(f"{len(ids)} tokens do not fit max_seq_len {self.n_ctx}")
        state = self._slot(slot)
        prefix = common_prefix_length(state.ids, ids)
        if prefix == len(ids) == len(state.ids) and state.logits is not None:
            return state.logits
        prefix = min(prefix, len(ids) - 1)  # the last token is re-fed so that its logits are current
        state.ids, state.logits = [], None  # if forward fails, nothing in the cache is trusted
        try:
            with torch.inference_mode():
                state.cache.current_seq_len = prefix  # later positions are overwritten, not cleared
                if len(ids) - prefix > 1:
                    self._model.forward(torch.tensor([ids[prefix:-1]]), state.cache, preprocess_only=True,
                                        loras=self._forward_loras())
                out = self._model.forward(torch.tensor([ids[-1:]]), state.cache, loras=self._forward_loras())
        except RuntimeError as exc:
            raise ModelRuntimeError(f"ExLlamaV2 failed to evaluate {len(ids) - prefix} tokens: {exc}") from exc
        state.ids, state.logits = ids, out[0, -1].float().cpu()
        self.evaluated_tokens += len(ids) - prefix
        return state.logits

    def sequence_logits(self, ids: Sequence[int]) -> torch.Tensor:
        """Every position's logits from one `forward` over `ids` on an emptied slot-0 cache, which then holds them.

        exllamav2 0.3.2 `ExLlamaV2.forward` (exllamav2/model.py) returns logits [bsz, q_len, head width] with
        last_id_only=False, splitting a long input into chunks itself; cpu_logits=True gathers them in system
        RAM (its docstring: for logits at every position of a long sequence, as in a perplexity test)."""
        torch = self._torch
        ids = list(ids)
        if not ids:
            raise ModelRuntimeError("cannot compute logits for an empty sequence")
        if len(ids) > self.n_ctx:
            raise ModelRuntimeError(f"{len(ids)} tokens do not fit max_seq_len {self.n_ctx}")
        state = self._slot(0)
        state.ids, state.logits = [], None  # the cache is rewritten from position 0
        try:
            with torch.inference_mode():
                state.cache.current_seq_len = 0
                out = self._model.forward(torch.tensor([ids]), state.cache, last_id_only=False,
                                          loras=self._forward_loras(), cpu_logits=True)
        except RuntimeError as exc:
            raise ModelRuntimeError(f"ExLlamaV2 failed to evaluate {len(ids)} tokens: {exc}") from exc
        logits = out[0].float().cpu()
        state.ids, state.logits = ids, logits[-1].clone()
        self.evaluated_tokens += len(ids)
        return logits[:, : self.vocab_size]

    # -- LoRA adapters -----------------------------------------------------------------------------

    supports_loras = True

    def _forward_loras(self) -> list[Any] | None:
        """The `loras=` argument of every forward: None, not [], without adapters. exllamav2 0.3.2 reads
        `loras[0]` whenever loras is not None (ExLlamaV2Embedding.forward, exllamav2/embedding.py, and
        ExLlamaV2Linear.forward for lm_head, exllamav2/linear.py), so an empty list raises IndexError."""
        return self._adapters.forward_arg()

    def set_loras(self, loras: Sequence[tuple[Path, float]]) -> None:
        """PEFT folders through `ExLlamaV2Lora.from_directory` (`loaders.lora_exllamav2`); every slot's cache
        is emptied when the set changes."""
        if self._adapters.apply(self._model, loras):
            self._clear_caches()

    def _clear_caches(self) -> None:
        """Forget what every slot's cache holds: KV computed without the adapters is wrong with them."""
        for state in self._slots.values():
            state.ids, state.logits = [], None
            state.cache.current_seq_len = 0

    @property
    def native_sampler(self) -> str | None:  # type: ignore[override]
        return "ExLlamaV2" if self.prefer_native else None

    def native_limits(self, params: SamplingParams) -> dict[str, str]:
        return {name: "ExLlamaV2's sampler cannot reproduce it exactly" for name in native.unsupported(params)}

    def native_generate(self, ids: Sequence[int], params: SamplingParams, seed: int) -> Iterator[int] | None:
        if not self.prefer_native or self.unsupported_native(params):
            return None
        if len(ids) < 2 and "dry" in params.active_samplers() and params.dry_penalty_last_n > 0:
            # ExLlamaV2Sampler.apply_dry (generator/sampler.py) with dry_range > 0 reads ngram_history[0]
            # before anything was added when the sequence is one token long (IndexError): use Hearth's DRY.
            return None
        from exllamav2.generator import ExLlamaV2Sampler


        settings = ExLlamaV2Sampler.Settings()
        breakers = sequence_breaker_ids(params.dry_sequence_breakers, lambda s: self.tokenize(s, add_bos=False))
        for name, value in native.settings_fields(params, breakers).items():
            setattr(settings, name, value)
        return self._native_loop(list(ids), params, settings, seed, ExLlamaV2Sampler.sample)

    def _native_loop(self, ids: list[int], params: SamplingParams, settings: Any, seed: int,
                     sample: Callable[..., Any]) -> Iterator[int]:
        torch = self._torch
        rng = random.Random(seed)
        raw = self._sync(ids, 0)
        settings.token_bias = self._token_bias(params, raw.numel())
        while True:
            logits = raw.clone().view(1, 1, -1)  # the sampler edits logits in place; the slot keeps its copy
            # ExLlamaV2Sampler.sample(logits [bsz, 1, width] float32 CPU, settings, sequence_ids [bsz, seq_len]
            # int64, random in [0, 1), tokenizer) -> (tokens [bsz, 1], top tokens, top probs, probs, end_filter)
            tokens, *_ = sample(logits, settings, torch.tensor([ids]), rng.random(), self._ex_tokenizer)
            token = int(tokens[0, 0])
            yield token
            ids.append(token)
            raw = self._sync(ids, 0)

    def _token_bias(self, params: SamplingParams, width: int) -> torch.Tensor | None:
        """logit_bias, custom bans and a banned EOS as one additive tensor as wide as the logits.

        ExLlamaV2Sampler.sample adds it with ext_c.fast_fadd_cpu: a contiguous float32 CPU tensor whose
        length is the head width (vocab_size padded to a multiple of 32, as Settings.disallow_tokens builds)."""
        bias = {int(k): float(v) for k, v in params.logit_bias.items()}
        bias.update({int(t): float("-inf") for t in params.custom_token_bans})
        if params.ban_eos_token:
            bias.update({t: float("-inf") for t in self._eos})
        if not bias:
            return None
        tensor = self._torch.zeros(width, dtype=self._torch.float)
        for token, value in bias.items():
            if 0 <= token < width:
                tensor[token] = value
        return tensor

    def unload(self) -> None:
        self._slots.clear()
        self._adapters.unload()
        if self._model is not None:
            self._model.unload()
        self._model = self._tokenizer = self._ex_tokenizer = None
        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()


class ExLlamav2Loader(Loader):
    name = "ExLlamav2"
    description = "EXL2 and GPTQ folders on NVIDIA GPUs through ExLlamaV2, with its own fast sampler."
    model_class: type[ExLlamav2Model] = ExLlamav2Model
    params = (
        LoaderParam("max_seq_len", "int", 0, f"Context length in tokens; 0 = the model's own (at most {MAX_DEFAULT_CTX}). "
                    "Its KV cache is allocated on the GPU at load.", 0, 1 << 20, step=256),
        LoaderParam("exl2_cache_type", "choice", "fp16", "ExLlamaV2 KV cache precision: fp8, or the quantized q8/q6/q4 "
                    "caches (q4 holds 4x the context of fp16 in the same VRAM, with little loss).", choices=tuple(CACHE_TYPES)),
        LoaderParam("gpu_split", "str", "", "GB of VRAM to use on each GPU, e.g. 20,7 (empty: GPU 0 only; "
                    "with enable_tp, every GPU by its free memory)."),
        LoaderParam("autosplit", "bool", False, "Fill the GPUs in turn with the model and its cache (instead of gpu_split)."),
        LoaderParam("enable_tp", "bool", False, "Tensor parallelism: split every layer across the GPUs (several GPUs only)."),
        LoaderParam("alpha_value", "float", 1.0, "NTK RoPE scaling: the RoPE base is multiplied by "
                    "alpha^(head_dim/(head_dim-2)), e.g. alpha^(64/63) for head_dim 128.", 1.0, 64.0, step=0.05),
        LoaderParam("compress_pos_emb", "float", 1.0, "Linear RoPE scaling factor (context multiplier); "
                    "1 = the model's own (config.json's linear rope_scaling, if any).", 1.0, 64.0),
        LoaderParam("flash_attn", "bool", True, "Use flash-attention where it is installed (off: xformers, SDPA or eager)."),
        LoaderParam("no_xformers", "bool", False, "Do not use xformers even where it is installed."),
        LoaderParam("no_sdpa", "bool", False, "Do not use PyTorch SDPA attention (eager attention instead)."),
        LoaderParam("num_experts_per_token", "int", 0, "Experts per token for mixture-of-experts models (0 = the model's own).", 0, 64),
    )

    @classmethod
    def score(cls, path: Path) -> int:
        """Above Transformers (50) for EXL2/GPTQ folders, well below it for plain fp16 ones."""
        if not is_safetensors_folder(path):
            return 0
        kind = quant_format(path)
        if kind == "gptq" and gptq_bits(path) not in (None, GPTQ_BITS):
            return 10  # ExLlamaV2 cannot run it (validate says why)
        return {"exl2": 90, "gptq": 80}.get(kind, 10)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        problem = backend_problem()
        return not problem, problem

    @classmethod
    def validate(cls, path: Path, params: dict[str, Any]) -> None:
        if not is_safetensors_folder(path):
            raise LoaderError(f"{path.name}: ExLlamaV2 loads folders with config.json and *.safetensors weights")
        bits = gptq_bits(path)
        if bits is not None and bits != GPTQ_BITS:
            raise LoaderError(f"{path.name}: ExLlamaV2 runs {GPTQ_BITS}-bit GPTQ only, this folder is {bits}-bit "
                              "(try the Transformers loader)")
        split = parse_gpu_split(params["gpu_split"])
        if params["autosplit"] and (split or params["enable_tp"]):
            raise LoaderError("autosplit places the model itself: leave gpu_split empty and enable_tp off, or turn autosplit off")

    def load(self, path: Path, params: dict[str, Any]) -> Model:
        problem = backend_problem()
        if problem:
            raise LoaderError(problem)
        self.validate(path, params)
        try:
            import exllamav2
            import torch
            from transformers import AutoTokenizer
        except (ImportError, OSError, RuntimeError) as exc:  # the CUDA extension is built on first import
            raise LoaderError(f"exllamav2 could not start (it compiles CUDA kernels on first use and needs "
                              f"a CUDA toolkit matching PyTorch's): {exc}") from exc
        model = None
        try:
            config = self._config(exllamav2, path, params)
            model = exllamav2.ExLlamaV2(config)
            cache_class = getattr(exllamav2, CACHE_TYPES[params["exl2_cache_type"]])
            split = parse_gpu_split(params["gpu_split"])
            if params["enable_tp"]:
                # load_tp(gpu_split GB per GPU or None = all GPUs' free memory, ...): expect_cache_base lets
                # TPContext.define_split (tensor_p.py) subtract the right cache size per GPU
                model.load_tp(split, expect_cache_base=cache_class)

                def new_cache(lazy: bool = False) -> Any:
                    return exllamav2.ExLlamaV2Cache_TP(model, base=cache_class)
            else:
                if not params["autosplit"]:
                    model.load(split)  # gpu_split: GB per GPU; None = the first GPU only

                def new_cache(lazy: bool = False) -> Any:
                    return cache_class(model, lazy=lazy)
            cache = new_cache(lazy=params["autosplit"])
            if params["autosplit"]:
                model.load_autosplit(cache)  # needs a cache made with lazy=True; it allocates it layer by layer
            ex_tokenizer = exllamav2.ExLlamaV2Tokenizer(config)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except torch.cuda.OutOfMemoryError as exc:
            discard_model(model)
            raise LoaderError(f"{path.name} does not fit in GPU memory: try a smaller max_seq_len, exl2_cache_type q4, "
                              f"or gpu_split/autosplit across GPUs ({exc})") from exc
        except (AssertionError, ValueError, TypeError, KeyError, OSError, RuntimeError) as exc:
            discard_model(model)
            raise LoaderError(f"ExLlamaV2 could not load {path.name}: {exc}") from exc
        info = self._info(path, config, tokenizer, params)
        return self.model_class(model, cache, new_cache, tokenizer, ex_tokenizer, info, _eos_ids(path, tokenizer))

    @staticmethod
    def _config(exllamav2: Any, path: Path, params: dict[str, Any]) -> Any:
        """As exllamav2's own model_init.init: prepare(), then only the options given, then arch_compat_overrides().

        prepare() reads config.json (a linear rope_scaling factor into scale_pos_emb) and __init__ reads the
        EXLLAMA_NO_FLASH_ATTN / _XFORMERS / _SDPA environment variables, so neutral values leave those alone."""
        config = exllamav2.ExLlamaV2Config()
        config.model_dir = str(path)
        config.prepare()
        config.max_seq_len = params["max_seq_len"] or min(config.max_seq_len, MAX_DEFAULT_CTX)
        if params["compress_pos_emb"] != 1.0:
            config.scale_pos_emb = params["compress_pos_emb"]
        if params["alpha_value"] != 1.0:
            config.scale_alpha_value = params["alpha_value"]
        if not params["flash_attn"]:
            config.no_flash_attn = True
        if params["no_xformers"]:
            config.no_xformers = True
        if params["no_sdpa"]:
            config.no_sdpa = True
        if params["num_experts_per_token"]:
            config.num_experts_per_token = params["num_experts_per_token"]  # read by ExLlamaV2MoEMLP.__init__
        config.arch_compat_overrides()  # after the options: it only turns off backends the architecture cannot use
        return config

    def _info(self, path: Path, config: Any, tokenizer: Any, params: dict[str, Any]) -> ModelInfo:
        return ModelInfo(
            name=path.name,
            loader=self.name,
            path=str(path),
            architecture=str(getattr(config, "architecture", "unknown")),
            context_length=int(config.max_seq_len),
            vocab_size=int(config.vocab_size),
            quantization=describe_quantization(path),
            chat_template=getattr(tokenizer, "chat_template", None),
            bos_token=tokenizer.bos_token,
            eos_token=tokenizer.eos_token,
            extra={"trained_context_length": int(getattr(config, "original_max_seq_len", 0) or 0),
                   "cache_type": params["exl2_cache_type"]},
        )


def discard_model(model: Any) -> None:
    """Free a half-loaded ExLlama model (V2 or V3) after a failed load, without hiding the load's error."""
    if model is not None:
        try:
            model.unload()
        except Exception:  # noqa: BLE001 - freeing a half-loaded model must not hide the real error
            pass
    gc.collect()


def _eos_ids(path: Path, tokenizer: Any) -> frozenset[int]:
    """EOS ids from config.json, generation_config.json and the tokenizer (instruct models list several)."""
    found: set[int] = set()
    for source in (read_json(path / "config.json"), read_json(path / "generation_config.json")):
        value = source.get("eos_token_id")
        found.update([value] if isinstance(value, int) else [v for v in value or [] if isinstance(v, int)])
    if tokenizer.eos_token_id is not None:
        found.add(int(tokenizer.eos_token_id))
    return frozenset(found)


@hookimpl
def hearth_loaders() -> list[type[Loader]]:
    # Imported here, not at the top: it subclasses this module's loader.
    from loaders.exllamav2_hf import ExLlamav2HFLoader

    return [ExLlamav2Loader, ExLlamav2HFLoader]
