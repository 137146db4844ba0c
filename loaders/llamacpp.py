"""llama.cpp loader (llama-cpp-python): GGUF files, with llama.cpp's native sampler chain for speed."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loaders import llamacpp_sampling as native
from loaders.llamacpp_batch import LlamaBatcher
from loaders.llamacpp_info import model_info, trained_context
from loaders.llamacpp_media import MMPROJ_PARAM, LlamaVision, MediaLayouts, Projector
from loaders.llamacpp_sequence import LlamaSequence
from webui import lanes
from webui.amx_probe import repack_takes_effect
from webui.errors import GenerationError, LoaderError, ModelRuntimeError
from webui.gguf_files import find_projector, is_projector_name, model_ggufs
from webui.input_errors import InvalidGrammar, check_token_ids
from webui.loader_api import Loader, LoaderParam, Model, ModelInfo
from webui.memory_estimate import AUTO_GPU_LAYERS, MemoryEstimateError, auto_gpu_layers
from webui.plugins import hookimpl
from webui.sampling.constraints import Constraint, build_constraint, runs_in_llguidance

if TYPE_CHECKING:
    import torch

    from webui.sampling import SamplingParams

CACHE_TYPES = {"f16": 1, "f32": 0, "q8_0": 8, "q4_0": 2}  # ggml_type ids
QUANTIZED_CACHE = ("q8_0", "q4_0")  # llama.cpp quantizes the V cache only with flash attention
MAX_DEFAULT_CTX = 8192
MAX_PARALLEL = 64
AUTO_LAYERS = AUTO_GPU_LAYERS  # n_gpu_layers: as many as fit in the free VRAM


def ntk_rope_freq_base(alpha: float, base: float = 10000.0) -> float:
    """NTK-aware RoPE scaling as text-generation-webui computes it: base * alpha^(64/63).

    alpha 2.65 gives about 8k context on a 4k-trained Llama-2."""
    return base * alpha ** (64 / 63)


def find_gguf(path: Path) -> Path | None:
    """The GGUF to load for `path`: the file itself, or the first (shard of the) GGUF in a folder; never a
    multimodal projector (`webui.gguf_files`), which only loads beside a model."""
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" and not is_projector_name(path.name) else None
    if path.is_dir():
        ggufs = model_ggufs(path)
        return ggufs[0] if ggufs else None
    return None


class LlamaCppModel(LlamaVision, Model):
    """A GGUF model in llama.cpp. Slot 0 uses the Llama's own context; slot 1 (CFG) gets a second one.
    With a projector (`loaders.llamacpp_media`) it takes images.

    With `parallel` N > 1 the Llama's context is replaced by one holding N sequences of n_ctx tokens each
    (n_seq_max = N, not unified: each sequence has its own n_ctx). Each running request (a lane, see
    `webui.lanes`) holds one of them, chosen by the longest cached prefix as llama.cpp's server does, and
    their tokens are decoded together (`loaders.llamacpp_batch`). A lane's CFG slot gets its own context."""

    prefer_native = True
    torch_threads = 1

    def __init__(self, llm: Any, info: ModelInfo, projector: Projector | None = None, parallel: int = 1):
        from llama_cpp import llama_cpp as capi

        self._capi = capi
        self._llm = llm
        self.info = info
        self._n_vocab = llm.n_vocab()
        self._n_ctx = llm.n_ctx()
        self.parallel = parallel
        if parallel > 1:
            ctx = self._shared_context(llm, parallel)
            self.stepper = LlamaBatcher(ctx, llm._batch, llm.n_batch)
            self._seqs = [LlamaSequence(ctx, llm._batch, llm.n_batch, self._n_vocab, self._n_ctx, seq_id=i,
                                        batcher=self.stepper) for i in range(parallel)]
        else:
            self._seqs = [LlamaSequence(llm._ctx, llm._batch, llm.n_batch, self._n_vocab, self._n_ctx)]
        #: Second contexts (CFG's negative prompt), by (sequence index, slot).
        self._extra: dict[tuple[int, int], LlamaSequence] = {}
        eos = {llm.token_eos()}
        vocab = llm._model.vocab
        eot = capi.llama_vocab_eot(vocab)
        eos |= {eot} if eot >= 0 else set()
        self._eos = frozenset(t for t in eos if t >= 0)
        self._loras: Any = None  # loaders.lora_llamacpp.LlamaLoras, made on the first set_loras
        self._projector, self._layouts = projector, MediaLayouts()

    def _shared_context(self, llm: Any, parallel: int) -> Any:
        """A context of `parallel` sequences of n_ctx each, in place of the Llama's own (freed first)."""
        from llama_cpp._internals import LlamaContext

        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx, params.n_seq_max, params.kv_unified = self._n_ctx * parallel, parallel, False
        llm._ctx.close()
        try:
            llm._ctx = LlamaContext(model=llm._model, params=params, verbose=False)
        except ValueError as exc:
            raise LoaderError(f"llama.cpp could not make a context of {parallel} slots x {self._n_ctx} tokens "
                              f"({exc}): lower parallel or n_ctx") from exc
        return llm._ctx

    def _sequences(self) -> list[LlamaSequence]:
        return [*self._seqs, *self._extra.values()]

    @property
    def evaluated_tokens(self) -> int:  # type: ignore[override]
        return sum(s.evaluated for s in self._sequences())

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    @property
    def bos_token_id(self) -> int | None:
        bos = self._llm.token_bos()
        return bos if bos >= 0 else None

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        bos = self.bos_token_id
        if add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    # llama.cpp aborts the process on an id outside its vocabulary: every id is checked first.
    def detokenize(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        check_token_ids(ids, self._n_vocab)
        return self._llm.detokenize(ids).decode("utf-8", errors="replace")

    def detokenize_special(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        check_token_ids(ids, self._n_vocab)
        return self._llm.detokenize(ids, special=True).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        check_token_ids([token_id], self._n_vocab, "token_id")
        return self._llm.detokenize([token_id])

    def token_text(self, token_id: int) -> bytes:
        check_token_ids([token_id], self._n_vocab, "token_id")
        return self._llm.detokenize([token_id], special=True)

    def _slot(self, slot: int, ids: Sequence[int] = ()) -> LlamaSequence:
        """The sequence of `slot` for the running lane (or the only one)."""
        index = 0
        lane = lanes.current()
        if self.parallel > 1 and lane is not None:
            index = self.stepper.hold(lane, self._seqs, ids)
        if slot == 0:
            return self._seqs[index]
        if (index, slot) not in self._extra:
            from llama_cpp._internals import LlamaBatch, LlamaContext

            llm = self._llm
            ctx = LlamaContext(model=llm._model, params=llm.context_params, verbose=False)
            batch = LlamaBatch(n_tokens=llm.n_batch, embd=0, n_seq_max=1, verbose=False)
            seq = self._extra[index, slot] = LlamaSequence(ctx, batch, llm.n_batch, self._n_vocab, self._n_ctx)
            seq.keepalive = batch  # type: ignore[attr-defined]
            if self._loras is not None:  # a new context gets the applied LoRAs too
                self._loras.set_on(ctx)
        return self._extra[index, slot]

    def logits(self, ids: Sequence[int], slot: int = 0) -> torch.Tensor:
        import torch

        seq = self._slot(slot, ids)
        seq.sync(ids, self._spans(ids))
        return torch.from_numpy(seq.last_logits())

    def sequence_logits(self, ids: Sequence[int]) -> torch.Tensor:
        """One batched pass with logits requested for every token (`LlamaSequence.score_all`, slot 0)."""
        import torch

        if self._spans(ids):
            raise ModelRuntimeError("logits at every position are not available over an image on llama.cpp")
        return torch.from_numpy(self._slot(0, ids).score_all(ids))

    @property
    def native_sampler(self) -> str | None:  # type: ignore[override]
        return "llama.cpp" if self.prefer_native else None

    def native_limits(self, params: SamplingParams) -> dict[str, str]:
        return native.limits(params)

    def native_chain(self, params: SamplingParams, seed: int, pick: bool = True) -> Any:
        """llama.cpp's sampler chain for `params` (a `LlamaSampler`; the caller closes it)."""
        return native.build_chain(params, model=self._llm._model, n_vocab=self._n_vocab, n_ctx=self.n_ctx,
                                  eos_ids=self._eos, seed=seed, pick=pick)

    def native_generate(self, ids: Sequence[int], params: SamplingParams, seed: int) -> Iterator[int] | None:
        if not self.prefer_native or self.unsupported_native(params):
            return None
        # GBNF runs in llama.cpp's grammar sampler; a JSON schema or a %llguidance grammar is masked by llguidance
        # (as llama.cpp built with llguidance does), which is ~30x faster per token than the GBNF sampler
        if runs_in_llguidance(params):
            grammar = build_constraint(self, params)
        else:
            grammar = self._grammar_sampler(params.grammar_string) if params.grammar_string else None
        chain = self.native_chain(params, seed)
        return self._native_loop(list(ids), chain, grammar, native.needs_history(params))

    def supports_grammar(self) -> bool:
        return True

    supports_loras = True

    def set_loras(self, loras: Sequence[tuple[Path, float]]) -> None:
        """GGUF adapters (a PEFT folder is converted first), set on every context (`loaders.lora_llamacpp`)."""
        from loaders.lora_llamacpp import LlamaLoras

        if self._loras is None:
            self._loras = LlamaLoras(self._capi, self._llm._model, Path(self.info.path))
        self._loras.apply(loras, list({id(seq.ctx): seq.ctx for seq in self._sequences()}.values()))
        for seq in self._sequences():  # a prefix cached without these adapters is wrong with them
            seq.reset()

    def _grammar_sampler(self, grammar: str) -> Any:
        capi = self._capi
        sampler = capi.llama_sampler_init_grammar(self._llm._model.vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise InvalidGrammar("grammar_string is not a valid GBNF grammar with a 'root' rule", "grammar_string")
        return sampler

    def _native_loop(self, ids: list[int], chain: Any, grammar: Any, history: int) -> Iterator[int]:
        """llama.cpp's chain picks each token; `grammar` (llama.cpp's grammar sampler, or a llguidance
        `Constraint`) first removes what it does not allow, and ends the reply once it allows only the end."""
        seq = self._slot(0, ids)
        capi = self._capi
        masked = isinstance(grammar, Constraint)
        try:
            seq.sync(ids, self._spans(ids))
            for token in ids if history < 0 else ids[len(ids) - history :] if history else ():
                chain.accept(token)  # penalties and DRY see the prompt, as in llama.cpp's server
            candidates = None
            end = np.array(sorted(self._eos), dtype=np.intc)
            while True:
                if grammar is None:
                    token = chain.sample(seq.ctx, seq.logits_index)
                else:
                    from llama_cpp._internals import LlamaTokenDataArray

                    candidates = candidates or LlamaTokenDataArray(n_vocab=self._n_vocab)
                    logits = seq.last_logits()
                    if masked:
                        allowed = grammar.allowed(self._n_vocab).astype(bool)
                        candidates.copy_logits(np.where(allowed, logits, np.float32("-inf")))
                    else:
                        candidates.copy_logits(logits)
                        capi.llama_sampler_apply(grammar, ctypes.byref(candidates.candidates))
                        allowed = np.isfinite(candidates.candidates_data.logit)
                    left = int(allowed.sum())
                    if left == 0 or (end.size and left <= end.size and int(allowed[end].sum()) == left):
                        # the grammar is complete (only the end is left): the reply ends, even with EOS banned
                        if end.size:
                            yield int(end[0])
                        return
                    capi.llama_sampler_apply(chain.sampler, ctypes.byref(candidates.candidates))
                    selected = candidates.candidates.selected
                    token = int(candidates.candidates_data.id[selected])
                    if masked:
                        grammar.advance(token)
                    elif np.isfinite(candidates.candidates_data.logit[selected]):
                        capi.llama_sampler_accept(grammar, token)
                    else:  # llama.cpp would abort the process on a token its grammar refuses
                        raise GenerationError("grammar_string: token bans or logit_bias leave no token the grammar allows")
                    chain.accept(token)
                yield token
                seq.append([token])
        finally:
            if grammar is not None and not masked:
                capi.llama_sampler_free(grammar)
            chain.close()

    def unload(self) -> None:
        self._close_projector()  # before the model it was made for
        for seq in self._extra.values():
            seq.ctx.close()
        self._extra.clear()
        self._seqs.clear()
        self._llm.close()
        self._llm = None
        gc.collect()


class LlamaCppLoader(Loader):
    name = "llama.cpp"
    description = "GGUF models through llama.cpp, with its native sampler chain (CPU, CUDA, Metal, Vulkan)."
    model_class: type[LlamaCppModel] = LlamaCppModel
    params = (
        LoaderParam("n_ctx", "int", 0, f"Context length in tokens; 0 = the model's own (at most {MAX_DEFAULT_CTX}).", 0, 1 << 20, step=256),
        LoaderParam("n_gpu_layers", "int", 0, f"Layers to offload to the GPU (-1 = all, {AUTO_LAYERS} = auto: as many as fit in free VRAM).", AUTO_LAYERS, 256),
        LoaderParam("threads", "int", 0, "CPU threads for generation (0 = physical cores).", 0, 256),
        LoaderParam("threads_batch", "int", 0, "CPU threads for prompt processing (0 = all cores).", 0, 256),
        LoaderParam("n_batch", "int", 512, "Tokens evaluated per batch while reading the prompt.", 1, 8192),
        LoaderParam("parallel", "int", 1, "Requests decoded together, like llama-server's --parallel: each gets "
                    "its own slot of n_ctx tokens (KV cache memory x this) and their tokens share each batch.",
                    1, MAX_PARALLEL),
        LoaderParam("rope_freq_base", "float", 0.0, "RoPE base frequency; 0 = from the model, or from alpha_value.", 0),
        LoaderParam("alpha_value", "float", 1.0, "NTK RoPE scaling: rope_freq_base = 10000 * alpha^(64/63).", 1.0, 64.0, step=0.05),
        LoaderParam("compress_pos_emb", "float", 1.0, "Linear RoPE scaling factor (context multiplier).", 1.0, 64.0),
        LoaderParam("flash_attn", "bool", False, "Flash attention (less KV memory traffic; needed for a quantized V cache)."),
        LoaderParam("cache_type", "choice", "f16", "KV cache precision: q8_0/q4_0 halve/quarter its memory; f32 doubles it and "
                    "scores as an f32 reference does (for evaluation; without flash_attn, which rounds to f16 on CPU).",
                    choices=tuple(CACHE_TYPES)),
        LoaderParam("mmap", "bool", True, "Memory-map the file instead of reading it into RAM."),
        LoaderParam("mlock", "bool", False, "Lock the weights in RAM so the OS cannot swap them out."),
        LoaderParam("repack", "bool", True, "Let llama.cpp copy quantized weights into faster CPU layouts (AMX, "
                    "interleaved rows; more RAM), like llama-server's --repack. Where the CPU advertises AMX it does "
                    "not run (some virtual machines), a probe finds out and the weights stay in place by themselves."),
        LoaderParam("tensor_split", "str", "", "Share of the model per GPU, e.g. 60,40."),
        MMPROJ_PARAM,
    )

    @classmethod
    def score(cls, path: Path) -> int:
        found = find_gguf(path)
        return 0 if found is None else (100 if path.is_file() else 80)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        ok = importlib.util.find_spec("llama_cpp") is not None
        return ok, "" if ok else "pip install llama-cpp-python"

    def load(self, path: Path, params: dict[str, Any]) -> Model:
        from llama_cpp import Llama

        gguf_path = find_gguf(path)
        if gguf_path is None:
            what = "a multimodal projector (mmproj): load the model beside it" if is_projector_name(path.name) else "not a GGUF file"
            raise LoaderError(f"{path} is {what}")
        self._check_gguf(gguf_path)
        mmproj = find_projector(path, gguf_path, params["mmproj"])
        if params["n_gpu_layers"] == AUTO_LAYERS:
            try:
                params = {**params, "n_gpu_layers": auto_gpu_layers(gguf_path, params)}
            except MemoryEstimateError as exc:
                raise LoaderError(f"n_gpu_layers auto: cannot size {gguf_path.name}: {exc}") from exc
        kwargs = self.llama_kwargs(gguf_path, params)
        try:
            with _model_params(**({} if repack_takes_effect(params["repack"]) else {"use_extra_bufts": False})):
                llm = Llama(model_path=str(gguf_path), **kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise LoaderError(f"llama.cpp could not load {gguf_path.name}: {exc}") from exc
        projector = None
        try:
            if mmproj is not None:
                projector = Projector(mmproj, llm, use_gpu=kwargs["n_gpu_layers"] != 0, n_threads=kwargs["n_threads"],
                                      flash_attn=params["flash_attn"])
            info = model_info(self.name, path, gguf_path, llm, projector)
            return self.model_class(llm, info, projector, params["parallel"])
        except BaseException:
            if projector is not None:
                projector.close()
            llm.close()
            raise

    @staticmethod
    def _check_gguf(path: Path) -> None:
        with open(path, "rb") as handle:
            if handle.read(4) != b"GGUF":
                raise LoaderError(f"{path.name} is not a GGUF file (bad magic number): the file may be corrupt or incomplete")

    @classmethod
    def validate(cls, path: Path, params: dict[str, Any]) -> None:
        gguf_path = find_gguf(path)
        if gguf_path is not None:  # a corrupt file is refused before the working model is unloaded
            cls._check_gguf(gguf_path)
            find_projector(path, gguf_path, params["mmproj"])  # so is a projector that is not there
        if params["cache_type"] in QUANTIZED_CACHE and not params["flash_attn"]:
            raise LoaderError(f"cache_type {params['cache_type']} needs flash_attn: llama.cpp quantizes the V cache only with flash attention")
        _tensor_split(params["tensor_split"])

    @staticmethod
    def llama_kwargs(path: Path, params: dict[str, Any]) -> dict[str, Any]:
        n_ctx = params["n_ctx"] or min(trained_context(path) or MAX_DEFAULT_CTX, MAX_DEFAULT_CTX)
        rope_base = params["rope_freq_base"] or (ntk_rope_freq_base(params["alpha_value"]) if params["alpha_value"] != 1 else 0.0)
        cores = os.cpu_count() or 1
        kwargs: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_gpu_layers": params["n_gpu_layers"],
            "n_threads": params["threads"] or max(1, cores // 2 if cores > 2 else cores),
            "n_threads_batch": params["threads_batch"] or cores,
            "n_batch": params["n_batch"],
            "n_ubatch": params["n_batch"],
            "rope_freq_base": rope_base,
            "rope_freq_scale": 1.0 / params["compress_pos_emb"],
            "flash_attn": params["flash_attn"],
            "type_k": CACHE_TYPES[params["cache_type"]],
            "type_v": CACHE_TYPES[params["cache_type"]],
            "use_mmap": params["mmap"],
            "use_mlock": params["mlock"],
            "verbose": False,
        }
        split = _tensor_split(params["tensor_split"])
        if split:
            kwargs["tensor_split"] = split
        return kwargs


_MODEL_PARAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def _model_params(**fields: Any) -> Iterator[None]:
    """Build a Llama with model parameters its constructor does not take (`use_extra_bufts`): it asks
    llama.cpp's `llama_model_default_params` for them, so that function answers with `fields` set while
    the model loads. The lock keeps two loads on other threads (the model pool's) from seeing each other's."""
    from llama_cpp import llama_cpp as capi

    with _MODEL_PARAMS_LOCK:
        default = capi.llama_model_default_params

        def params() -> Any:
            value = default()
            for name, setting in fields.items():
                setattr(value, name, setting)
            return value

        capi.llama_model_default_params = params
        try:
            yield
        finally:
            capi.llama_model_default_params = default


def _tensor_split(text: str) -> list[float] | None:
    if not text.strip():
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise LoaderError(f"tensor_split: expected numbers separated by commas, got {text!r}") from None


@hookimpl
def hearth_loaders() -> list[type[Loader]]:
    return [LlamaCppLoader]
