"""Transformers loader: an HF folder (config.json + safetensors/bin) through AutoModelForCausalLM, or an
image-text-to-text model through AutoModelForImageTextToText and its processor (`loaders.transformers_vision`).

Generation goes through Hearth's own loop (`Model.logits` + the sampler pipeline), so every sampler,
CFG and the negative prompt work the same here as on llama.cpp through the pipeline path.
"""

from __future__ import annotations

import gc
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loaders.hf_tokenized import HFTokenized
from webui.errors import LoaderError, ModelRuntimeError
from webui.loader_api import Loader, LoaderParam, Model, ModelInfo, common_prefix_length
from webui.memory_estimate import TRANSFORMERS_PREFILL_CHUNK
from webui.plugins import hookimpl

_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
#: Tokens fed per forward call while reading a prompt (llama.cpp's n_batch): activations scale with it, so a
#: long prompt costs the memory of one chunk's activations, not of the whole context's. The memory
#: estimate counts the same chunk, hence one constant.
PREFILL_CHUNK = TRANSFORMERS_PREFILL_CHUNK


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _quantization_params() -> tuple[LoaderParam, ...]:
    """8/4-bit loading is offered only where it can work: CUDA and bitsandbytes present."""
    if not (_cuda_available() and importlib.util.find_spec("bitsandbytes")):
        return ()
    return (
        LoaderParam("load_in_8bit", "bool", False, "Quantize weights to 8 bits at load (bitsandbytes)."),
        LoaderParam("load_in_4bit", "bool", False, "Quantize weights to 4 bits at load (bitsandbytes, NF4)."),
    )


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any(
        next(path.glob(pattern), None) for pattern in _WEIGHT_GLOBS
    )


def read_quantization_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config.get("quantization_config") or {}


class TransformersModel(HFTokenized, Model):
    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo, device: Any) -> None:
        import torch

        self._torch = torch
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self.info = info
        #: slot -> (ids, KV cache, last logits, the images among the ids)
        self._caches: dict[int, tuple[list[int], Any, Any, tuple]] = {}
        eos = model.generation_config.eos_token_id if model.generation_config else None
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos = frozenset([eos] if isinstance(eos, int) else (eos or []))
        self._lora_names: list[str] = []  # PEFT adapter names of the applied LoRAs
        self._loras: list[tuple[Path, float]] = []

    supports_loras = True

    @property
    def torch_module(self) -> Any:
        """The torch model itself: LoRA training wraps it with PEFT and restores it (webui/training)."""
        return self._model

    def set_loras(self, loras: Sequence[tuple[Path, float]]) -> None:
        """PEFT adapters loaded into the model, scaled and activated (`loaders.lora_transformers`)."""
        from loaders.lora_transformers import set_peft_loras

        self._lora_names = set_peft_loras(self._model, self._lora_names, self._loras, loras)
        self._loras = list(loras)
        self._caches.clear()  # a prefix cached without these adapters is wrong with them

    @property
    def vocab_size(self) -> int:
        return self._model.config.get_text_config().vocab_size

    def logits(self, ids: Sequence[int], slot: int = 0) -> Any:
        return self._read(list(ids), slot)

    def _read(self, ids: list[int], slot: int, every: bool = False) -> Any:
        """`logits`, through the slot's cache; with `every`, (the logits of each position it evaluated,
        the first such position) instead."""
        if not ids:
            raise ModelRuntimeError("cannot compute logits for an empty sequence")
        media = self._media_in(ids)
        cached_ids, cache, last_logits, cached_media = self._caches.get(slot, ([], None, None, ()))
        prefix = common_prefix_length(cached_ids, ids)
        if prefix == len(ids) == len(cached_ids) and media == cached_media and last_logits is not None and not every:
            return last_logits
        self._caches.pop(slot, None)  # while it is rebuilt, an old cache must not stay alive beside it
        # at least one token must be fed to get its logits; an image is evaluated whole or not at all
        prefix = self._resume_at(min(prefix, len(ids) - 1), cached_media, media)
        if cache is not None and prefix < len(cached_ids):
            cache.crop(prefix - len(cached_ids))  # transformers 5: a negative count of tokens to drop
        if cache is None or prefix == 0:
            cache = self._new_cache()
            prefix = 0
        logits, cache = self._evaluate(ids, prefix, cache, media, every)
        self.evaluated_tokens += len(ids) - prefix
        self._caches[slot] = (ids, cache, logits[-1].clone() if every else logits, media)
        return (logits, prefix) if every else logits

    def sequence_logits(self, ids: Sequence[int]) -> Any:
        """Every position's logits from one forward pass (chunked like `logits`); the pass's cache then
        becomes slot 0's, so generation reuses it truthfully and only one cache is alive at a time."""
        ids = list(ids)
        if not ids:
            raise ModelRuntimeError("cannot compute logits for an empty sequence")
        media = self._media_in(ids)
        self._caches.pop(0, None)
        logits, cache = self._evaluate(ids, 0, self._new_cache(), media, every=True)
        self.evaluated_tokens += len(ids)
        self._caches[0] = (ids, cache, logits[-1].clone(), media)
        return logits

    # -- the forward passes; a vision model (loaders/transformers_vision.py) adds its images here ----------
    def _media_in(self, ids: list[int]) -> tuple:
        """The images `ids` carry (part of the cache key); a text model has none."""
        return ()

    def _resume_at(self, prefix: int, cached_media: tuple, media: tuple) -> int:
        """Where evaluation restarts, given the reusable prefix of the token ids."""
        return prefix

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self._model.config)

    def _chunks(self, start: int, end: int, media: tuple) -> list[tuple[int, int]]:
        return [(s, min(s + PREFILL_CHUNK, end)) for s in range(start, end, PREFILL_CHUNK)]

    def _forward(self, ids: list[int], begin: int, end: int, cache: Any, media: tuple, every: bool) -> Any:
        chunk = self._torch.tensor([ids[begin:end]], dtype=self._torch.long, device=self._device)
        return self._model(input_ids=chunk, past_key_values=cache, use_cache=True, logits_to_keep=0 if every else 1)

    def _evaluate(self, ids: list[int], start: int, cache: Any, media: tuple, every: bool) -> tuple[Any, Any]:
        """Feed ids[start:] on top of `cache` in chunks (they bound the activations' memory): the last
        position's logits (every position's, from `start`, with `every`) and the grown cache."""
        torch = self._torch
        rows = []
        try:
            with torch.inference_mode():
                for begin, end in self._chunks(start, len(ids), media):
                    out = self._forward(ids, begin, end, cache, media, every)
                    cache = out.past_key_values
                    if every:
                        rows.append(out.logits[0].float().cpu())
        except RuntimeError as exc:
            raise ModelRuntimeError(f"the model failed to evaluate {len(ids) - start} tokens: {exc}") from exc
        return (torch.cat(rows) if every else out.logits[0, -1].float().cpu()), cache

    def unload(self) -> None:
        self._caches.clear()
        self._model = None
        self._tokenizer = None
        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()


class TransformersLoader(Loader):
    name = "Transformers"
    description = "Hugging Face Transformers: full-precision or bitsandbytes-quantized HF folders."
    params = (
        LoaderParam("dtype", "choice", "auto", "Weight dtype; auto keeps the checkpoint's (float32 on CPU if it is half).",
                    choices=("auto", "float32", "bfloat16", "float16")),
        LoaderParam("device", "choice", "auto", "Where to run: auto picks CUDA when present.", choices=("auto", "cpu", "cuda")),
        LoaderParam("trust_remote_code", "bool", False, "Run Python code shipped with the model (only for repos you trust)."),
        *_quantization_params(),
    )

    @classmethod
    def score(cls, path: Path) -> int:
        if not is_hf_folder(path):
            return 0
        method = str(read_quantization_config(path).get("quant_method", "")).lower()
        if method in ("exl2", "exl3"):
            return 0  # Transformers cannot read EXL2 / EXL3 weights; only ExLlamaV2 / ExLlamaV3 can
        return 20 if method == "gptq" else 50

    @classmethod
    def available(cls) -> tuple[bool, str]:
        ok = importlib.util.find_spec("transformers") is not None
        return ok, "" if ok else "pip install transformers"

    def load(self, path: Path, params: dict[str, Any]) -> Model:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

        from loaders.transformers_processor import is_vision_config, load_processor
        from loaders.transformers_vision import TransformersVisionModel

        if not is_hf_folder(path):
            raise LoaderError(f"{path} is not a Transformers model folder (config.json and weights are needed)")
        device = self._device(params["device"])
        kwargs: dict[str, Any] = {"trust_remote_code": params["trust_remote_code"], "dtype": self._dtype(params["dtype"], device)}
        if params.get("load_in_8bit") or params.get("load_in_4bit"):
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=bool(params.get("load_in_8bit")), load_in_4bit=bool(params.get("load_in_4bit"))
            )
            kwargs["device_map"] = "auto"
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=params["trust_remote_code"])
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=params["trust_remote_code"])
            vision = is_vision_config(config)  # an image-text-to-text model: with its processor
            auto = AutoModelForImageTextToText if vision else AutoModelForCausalLM
            model = auto.from_pretrained(path, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise LoaderError(f"Transformers could not load {path.name}: {exc}") from exc
        if "device_map" not in kwargs:
            model.to(device)
        model.eval()
        if not vision:
            return TransformersModel(model, tokenizer, self._info(path, model, config, tokenizer), torch.device(device))
        processor, problem = load_processor(path, config, params["trust_remote_code"])
        info = self._info(path, model, config, tokenizer, getattr(processor, "chat_template", None))
        return TransformersVisionModel(model, tokenizer, info, torch.device(device), processor, problem)

    @staticmethod
    def _device(choice: str) -> str:
        if choice == "auto":
            return "cuda" if _cuda_available() else "cpu"
        if choice == "cuda" and not _cuda_available():
            raise LoaderError("device=cuda was asked for, but this PyTorch sees no CUDA GPU")
        return choice

    @staticmethod
    def _dtype(choice: str, device: str) -> Any:
        import torch

        if choice == "auto":
            return "auto" if device == "cuda" else torch.float32
        return getattr(torch, choice)

    @staticmethod
    def _info(path: Path, model: Any, config: Any, tokenizer: Any, processor_template: str | None = None) -> ModelInfo:
        """What the Model tab shows; the chat template is the tokenizer's, else the processor's (a vision
        model's processor may ship the only one)."""
        text_config = config.get_text_config()
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        quant = read_quantization_config(path).get("quant_method") or dtype
        return ModelInfo(
            name=path.name,
            loader=TransformersLoader.name,
            path=str(path),
            architecture=(config.architectures or [config.model_type])[0],
            parameters=sum(p.numel() for p in model.parameters()),
            context_length=int(getattr(text_config, "max_position_embeddings", 0) or 2048),
            vocab_size=int(text_config.vocab_size),
            quantization=str(quant),
            chat_template=getattr(tokenizer, "chat_template", None) or processor_template,
            bos_token=tokenizer.bos_token,
            eos_token=tokenizer.eos_token,
        )


@hookimpl
def hearth_loaders() -> list[type[Loader]]:
    return [TransformersLoader]
