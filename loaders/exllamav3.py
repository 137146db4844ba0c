"""ExLlamaV3 loader (exllamav3 1.6.5): EXL3 folders on NVIDIA GPUs, with ExLlamaV3's own sampler.

exllamav3 is imported only inside `load()` and the native path: importing it builds CUDA kernels, and the
app, the CLI and the tests must work without it. Detection lives in `loaders.exl3_detect` for that reason.

The load follows exllamav3's own `model_init.init` (exllamav3/model_init.py): `Config.from_directory`,
`Model.from_config`, every `Cache` created *before* `model.load(...)` (cache tensors are allocated by the
load, per layer on the layer's device: exllamav3/cache/cache.py `Cache.__init__`, model/model.py `load_gen`),
so CFG's second cache (slot 1) exists only when `cfg_cache` is on. The Model (prefix-cached
slots, the native sampler) is in `loaders.exllamav3_model`.

LoRA adapters: `loaders.exllamav3_lora` (PEFT folders through exllamav3's `LoRA.from_directory`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from loaders.exl2_detect import is_safetensors_folder, parse_gpu_split
from loaders.exl3_detect import backend_problem, describe_quantization, is_exl3
from loaders.exllamav2 import _eos_ids, discard_model
from loaders.exllamav3_model import CHUNK, MAX_DEFAULT_CTX, PAGE_SIZE, ExLlamav3Model, cache_tokens
from webui.errors import LoaderError
from webui.loader_api import Loader, LoaderParam, Model, ModelInfo
from webui.plugins import hookimpl

if TYPE_CHECKING:

    pass

#: Hearth's exl3_cache_type -> (k_bits, v_bits) of CacheLayer_quant (exllamav3/cache/quant.py: 2..8 bits);
#: None = CacheLayer_fp16.
CACHE_TYPES: dict[str, tuple[int, int] | None] = {
    "fp16": None,
    "q8": (8, 8),
    "q6": (6, 6),
    "q5": (5, 5),
    "q4": (4, 4),
    "q3": (3, 3),
    "q2": (2, 2),
    "q8_q4": (8, 4),
    "q6_q4": (6, 4),
    "q4_q3": (4, 3),
}
class ExLlamav3Loader(Loader):
    name = "ExLlamav3"
    description = (
        "EXL3 folders on NVIDIA GPUs through ExLlamaV3, with its own sampler where it matches Hearth's."
    )
    model_class: type[ExLlamav3Model] = ExLlamav3Model
    params = (
        LoaderParam(
            "max_seq_len",
            "int",
            0,
            f"Context length in tokens; 0 = the model's own (at most {MAX_DEFAULT_CTX}). "
            f"Its KV cache (rounded up to {PAGE_SIZE}) is allocated on the GPU at load.",
            0,
            1 << 20,
            step=256,
        ),
        LoaderParam(
            "exl3_cache_type",
            "choice",
            "fp16",
            "ExLlamaV3 KV cache: fp16, or quantized keys/values "
            "(q8..q2 bits each, q8_q4 = 8-bit keys and 4-bit values); q4 holds ~3.5x the context of fp16.",
            choices=tuple(CACHE_TYPES),
        ),
        LoaderParam(
            "gpu_split",
            "str",
            "",
            "GB of VRAM to use on each GPU, e.g. 20,7 (empty: GPU 0 only, "
            "or with autosplit / enable_tp every GPU by its free memory).",
        ),
        LoaderParam(
            "autosplit",
            "bool",
            False,
            "Fill the GPUs in turn with the model and its cache (instead of gpu_split).",
        ),
        LoaderParam(
            "enable_tp",
            "bool",
            False,
            "Tensor parallelism: split every layer across the GPUs (several GPUs only).",
        ),
        LoaderParam(
            "tp_backend",
            "choice",
            "native",
            "Tensor-parallel transport between GPUs (enable_tp only).",
            choices=("native", "nccl"),
        ),
        LoaderParam(
            "cfg_cache",
            "bool",
            False,
            "Allocate a second cache at load for CFG's negative prompt "
            "(ExLlamaV3 allocates caches with the model, so CFG needs this on).",
        ),
    )

    @classmethod
    def score(cls, path: Path) -> int:
        """Above Transformers (50) and ExLlamaV2 for EXL3 folders; nothing else."""
        return 95 if is_exl3(path) else 0

    @classmethod
    def available(cls) -> tuple[bool, str]:
        problem = backend_problem()
        return not problem, problem

    @classmethod
    def validate(cls, path: Path, params: dict[str, Any]) -> None:
        if not is_safetensors_folder(path) or not is_exl3(path):
            raise LoaderError(
                f"{path.name}: ExLlamaV3 loads EXL3 folders (config.json with quant_method exl3 "
                "and *.safetensors); convert with python -m exllamav3.conversion.convert_model"
            )
        split = parse_gpu_split(params["gpu_split"])
        if params["autosplit"] and (split or params["enable_tp"]):
            raise LoaderError(
                "autosplit places the model itself: leave gpu_split empty and enable_tp off, or turn autosplit off"
            )

    def load(self, path: Path, params: dict[str, Any]) -> Model:
        problem = backend_problem()
        if problem:
            raise LoaderError(problem)
        self.validate(path, params)
        try:
            import exllamav3
            import torch
            from transformers import AutoTokenizer
        except (ImportError, OSError, RuntimeError) as exc:
            raise LoaderError(
                f"exllamav3 could not start (it compiles CUDA kernels on first use and needs a CUDA "
                f"toolkit matching PyTorch's): {exc}"
            ) from exc
        model = None
        try:
            config = exllamav3.Config.from_directory(str(path))
            n_ctx = params["max_seq_len"] or min(
                int(config.max_position_embeddings or MAX_DEFAULT_CTX), MAX_DEFAULT_CTX
            )
            model = exllamav3.Model.from_config(config)
            max_tokens = cache_tokens(n_ctx)
            caches = {
                slot: self._cache(exllamav3, model, max_tokens, params["exl3_cache_type"])
                for slot in ((0, 1) if params["cfg_cache"] else (0,))
            }
            model.load(**self._placement(params))
            # as model_init.init: compile and autotune the hot paths now, not on the first request (one sequence
            # per cache, so batch size 1; no long-context family: its passes cost seconds)
            model.warmup(cache=caches[0], max_chunk_size=CHUNK, max_batch_size=1, long_context=False)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except torch.cuda.OutOfMemoryError as exc:
            discard_model(model)
            raise LoaderError(
                f"{path.name} does not fit in GPU memory: try a smaller max_seq_len, a quantized "
                f"exl3_cache_type (q4), cfg_cache off, or gpu_split/autosplit across GPUs ({exc})"
            ) from exc
        except (
            AssertionError,
            ValueError,
            TypeError,
            KeyError,
            OSError,
            RuntimeError,
            NotImplementedError,
        ) as exc:
            discard_model(model)
            raise LoaderError(f"ExLlamaV3 could not load {path.name}: {exc}") from exc
        info = ModelInfo(
            name=path.name,
            loader=self.name,
            path=str(path),
            architecture=str(config.architecture),
            context_length=n_ctx,
            vocab_size=int(config.vocab_size),
            quantization=describe_quantization(path),
            chat_template=getattr(tokenizer, "chat_template", None),
            bos_token=tokenizer.bos_token,
            eos_token=tokenizer.eos_token,
            extra={
                "trained_context_length": int(config.max_position_embeddings or 0),
                "cache_type": params["exl3_cache_type"],
                "cfg_cache": params["cfg_cache"],
            },
        )
        return self.model_class(model, caches, tokenizer, info, _eos_ids(path, tokenizer), max_tokens)

    @staticmethod
    def _cache(exllamav3: Any, model: Any, max_tokens: int, cache_type: str) -> Any:
        """As model_init.init: Cache(model, max_num_tokens, layer_type, k_bits, v_bits, max_batch_size); one
        sequence per cache, so one recurrent-state slot."""
        bits = CACHE_TYPES[cache_type]
        if bits is None:
            return exllamav3.Cache(
                model, max_num_tokens=max_tokens, layer_type=exllamav3.CacheLayer_fp16, max_batch_size=1
            )
        return exllamav3.Cache(
            model,
            max_num_tokens=max_tokens,
            layer_type=exllamav3.CacheLayer_quant,
            k_bits=bits[0],
            v_bits=bits[1],
            max_batch_size=1,
        )

    @staticmethod
    def _placement(params: dict[str, Any]) -> dict[str, Any]:
        """Model.load_gen's placement arguments: device= loads on one GPU; use_per_device= (GB per GPU) or
        neither (every GPU, 0.5 GB reserved each) runs its autosplit; tensor_p= splits every layer."""
        split = parse_gpu_split(params["gpu_split"])
        kwargs: dict[str, Any] = {"max_chunk_size": CHUNK, "progressbar": False}
        if params["enable_tp"]:
            kwargs.update(tensor_p=True, tp_backend=params["tp_backend"])
            if split:
                kwargs["use_per_device"] = split
        elif split:
            kwargs["use_per_device"] = split
        elif not params["autosplit"]:
            kwargs["device"] = "cuda:0"
        return kwargs


@hookimpl
def hearth_loaders() -> list[type[Loader]]:
    from loaders.exllamav3_hf import ExLlamav3HFLoader

    return [ExLlamav3Loader, ExLlamav3HFLoader]
