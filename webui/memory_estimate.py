"""How much memory a model will take with given loader settings, read from file headers before loading.

The Model tab shows the estimate next to the sliders and fills n_gpu_layers="auto" with `max_gpu_layers`;
both come from `estimate(path, loader_name, params)`. Only headers are read: GGUF metadata and tensor
infos through gguf's GGUFReader (it memory-maps the file; no tensor data is touched), or config.json plus
the JSON header of each safetensors file (8-byte length, then the header).

Estimate = weights + KV cache + overhead. Weights are exact (bytes of the tensors). The KV cache is
exact for a plain llama.cpp cache: 2 (K and V) * n_layers * n_ctx * n_kv_heads * head_dim * bytes per
value (f16 2, f32 4, q8_0 34/32, q4_0 18/32); sliding-window models use less. The overhead (`compute_buffer_bytes`)
is an approximation of llama.cpp's compute buffer, see there; for Transformers it is the activations of one
forward over a prompt chunk (`transformers_activation_bytes`).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from webui.amx_probe import repack_takes_effect
from webui.cpu_weight_buffers import extra_buffer_bytes
from webui.errors import HearthError

GiB = 1 << 30
MiB = 1 << 20
KV_BYTES = {"f16": 2.0, "f32": 4.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # per cached value, ggml block sizes
TORCH_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
SAFETENSORS_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
DEFAULT_CTX_CAP = 8192  # the llama.cpp loader's n_ctx=0 rule: the model's own context, at most this
CUDA_RESERVE = 300 * MiB  # CUDA context, cuBLAS workspace: VRAM that no buffer report shows
# llama.cpp's fixed host allocations (vocabulary tables, thread pool, graph metadata): 13.6 MiB measured
# for a 32k vocabulary by bench/bench_memory_estimate.py, modelled as a base plus a per-token part.
RUNTIME_BASE = 8 * MiB
RUNTIME_PER_VOCAB_TOKEN = 180
NF4_BYTES = 0.5 + 1 / 64  # 4-bit NF4 plus one 8-bit absmax per 64 weights (double quantization)


class MemoryEstimateError(HearthError):
    """The file's headers could not be read, or lack what an estimate needs."""


@dataclass(frozen=True)
class ModelFacts:
    """What an estimate needs, read from headers: sizes, architecture and where the bytes are."""

    format: str  # "gguf" or "hf"
    architecture: str
    n_params: int
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_size: int
    vocab_size: int
    context_length: int
    file_size: int
    weight_bytes: int
    layer_bytes: tuple[int, ...]  # per block, in order
    input_bytes: int  # token embeddings: llama.cpp keeps them on the CPU
    output_bytes: int  # output norm and head: on the GPU only when all layers are
    n_experts: int = 0
    n_experts_used: int = 0
    dtype: str = ""  # the checkpoint's torch dtype (HF folders)
    bytes_by_type: dict[str, int] = field(default_factory=dict)
    quantizable_params: int = 0  # HF: 2-D weights inside blocks, what bitsandbytes quantizes
    #: GGUF: per block and for the output head, the weights llama.cpp's CPU backend copies into an extra buffer
    #: (`webui.cpu_weight_buffers`) when they run on the CPU: (bytes as stored, bytes in the extra buffer).
    layer_moved: tuple[tuple[int, int], ...] = ()
    output_moved: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by kind; `vram` and `ram` split the same total by device."""

    weights_gpu: int
    weights_cpu: int
    kv_cache: int
    overhead: int
    vram: int
    ram: int

    @property
    def total(self) -> int:
        return self.weights_gpu + self.weights_cpu + self.kv_cache + self.overhead

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}



def kv_cache_bytes(n_layers: int, n_ctx: int, n_kv_heads: int, head_dim: int, cache_type: str = "f16") -> int:
    """K and V for every layer and position; GQA models cache only their n_kv_heads."""
    if cache_type not in KV_BYTES:
        raise MemoryEstimateError(f"cache_type {cache_type!r} is not one of {', '.join(KV_BYTES)}")
    return round(2 * n_layers * n_ctx * n_kv_heads * head_dim * KV_BYTES[cache_type])


def compute_buffer_bytes(facts: ModelFacts, n_ctx: int, n_ubatch: int = 512, flash_attn: bool = False) -> int:
    """Approximate llama.cpp compute buffer (f32 activations of one micro-batch), fitted to what it reserves.

    llama.cpp sizes the buffer by planning the graph of a full micro-batch: n_ubatch tokens against n_ctx
    cached positions, with logits for every token. Its peak is the larger of two moments:
    - attention: the scores (n_heads * n_ctx per token; with flash attention none are materialised) and the
      mask (n_ctx per token), while two FFN-sized tensors (gate, up; per active expert) are still allocated;
    - output: the logits (vocab per token) plus two hidden-state tensors.
    For a Llama-style model this matches llama.cpp's own "compute buffer size" report to the MiB
    (bench/bench_memory_estimate.py prints both); other architectures add a little.
    """
    n_ubatch = max(1, min(n_ubatch, n_ctx))
    per_token_attn = (0 if flash_attn else facts.n_heads * n_ctx) + n_ctx
    per_token_ffn = 2 * facts.ffn_size * max(1, facts.n_experts_used)
    per_token_out = facts.vocab_size + 2 * facts.hidden_size
    return 4 * n_ubatch * max(per_token_attn + per_token_ffn, per_token_out)


def cpu_work_bytes(facts: ModelFacts, n_ctx: int, n_ubatch: int = 512, flash_attn: bool = False) -> int:
    """The CPU backend's scratch buffer, outside the compute buffer: for scores x V it converts the f32
    scores to the f16 of the V cache (n_heads * n_ctx per token). Flash attention never builds the scores."""
    return 0 if flash_attn else 2 * facts.n_heads * n_ctx * max(1, min(n_ubatch, n_ctx))


def estimate(path: str | Path, loader_name: str, params: dict[str, Any]) -> MemoryEstimate:
    """Memory for loading `path` with a loader's parameters (names as the loaders declare them)."""
    facts = read_model(path)
    if loader_name.lower().startswith("exllamav3") and facts.format == "hf":
        from webui.memory_exl3 import estimate_exllamav3

        return estimate_exllamav3(facts, params)
    if facts.format == "gguf" or loader_name.lower().startswith("llama"):  # llama.cpp, llamacpp_HF (not ExLlamav2)
        if facts.format != "gguf":
            raise MemoryEstimateError(f"{Path(path).name} is not a GGUF model: {loader_name} cannot load it")
        return with_projector(estimate_llamacpp(facts, params), path, facts, params)
    return estimate_transformers(facts, params)


def with_projector(base: MemoryEstimate, path: str | Path, facts: ModelFacts, params: dict[str, Any]) -> MemoryEstimate:
    """`base` plus the multimodal projector the llama.cpp loader would load beside the model (mmproj)."""
    from webui.gguf_files import projector_bytes

    ngl = int(params.get("n_gpu_layers", 0))
    projector = projector_bytes(path, {**params, "n_gpu_layers": auto_gpu_layers(facts, params) if ngl == AUTO_GPU_LAYERS else ngl})
    if not projector.total:
        return base
    return _split(base.weights_gpu + (projector.weights if projector.on_gpu else 0),
                  base.weights_cpu + (0 if projector.on_gpu else projector.weights),
                  base.kv_cache, base.overhead + projector.compute, base.vram + projector.vram)


def estimate_llamacpp(facts: ModelFacts, params: dict[str, Any]) -> MemoryEstimate:
    """llama.cpp: the last n_gpu_layers blocks (and their KV) on the GPU; the output head too past n_layers."""
    n_ctx = int(params.get("n_ctx") or min(facts.context_length or DEFAULT_CTX_CAP, DEFAULT_CTX_CAP))
    ngl = int(params.get("n_gpu_layers", 0))
    if ngl == AUTO_GPU_LAYERS:
        ngl = auto_gpu_layers(facts, params)
    ngl = facts.n_layers + 1 if ngl < 0 else min(ngl, facts.n_layers + 1)
    blocks = min(ngl, facts.n_layers)
    weights_gpu = sum(facts.layer_bytes[facts.n_layers - blocks :]) + (
        facts.output_bytes if ngl > facts.n_layers else 0
    )
    kv = kv_cache_bytes(  # `parallel` slots: n_ctx positions each, in one context
        facts.n_layers, n_ctx, facts.n_kv_heads, facts.head_dim, str(params.get("cache_type", "f16"))
    ) * max(1, int(params.get("parallel", 1)))
    kv_gpu = kv * blocks // max(facts.n_layers, 1)
    extra_cpu = (cpu_extra_buffers(facts, blocks, ngl > facts.n_layers, bool(params.get("mmap", True)))
                 if repack_takes_effect(bool(params.get("repack", params.get("extra_buffers", True)))) else 0)
    n_batch, flash_attn = int(params.get("n_batch", 512)), bool(params.get("flash_attn", False))
    compute = compute_buffer_bytes(facts, n_ctx, n_batch, flash_attn)
    overhead_gpu = compute + CUDA_RESERVE if ngl else 0
    runtime = RUNTIME_BASE + RUNTIME_PER_VOCAB_TOKEN * facts.vocab_size
    if ngl <= facts.n_layers:  # some layers or the output head run on the CPU
        overhead_cpu = compute + cpu_work_bytes(facts, n_ctx, n_batch, flash_attn) + runtime
    else:  # only the input embedding lookup and the host copy of the batch
        overhead_cpu = 4 * 4 * facts.hidden_size * n_batch + runtime
    vram = weights_gpu + kv_gpu + overhead_gpu
    return _split(weights_gpu, facts.weight_bytes - weights_gpu + extra_cpu, kv, overhead_gpu + overhead_cpu, vram)


def cpu_extra_buffers(facts: ModelFacts, gpu_blocks: int, output_on_gpu: bool, mmap: bool) -> int:
    """What the CPU backend's extra weight buffers (AMX, CPU_REPACK: `webui.cpu_weight_buffers`) add for the
    weights that run on the CPU: their copy, on top of the mapped file's resident pages; without mmap the copy
    replaces the stored bytes (only a layout's extra bytes are added)."""
    moved = [*facts.layer_moved[: max(facts.n_layers - gpu_blocks, 0)], *([] if output_on_gpu else [facts.output_moved])]
    stored, copied = sum(m[0] for m in moved), sum(m[1] for m in moved)
    return copied if mmap else copied - stored


#: Tokens per forward call of Hearth's Transformers loader while reading a prompt (its PREFILL_CHUNK).
TRANSFORMERS_PREFILL_CHUNK = 512


def transformers_activation_bytes(facts: ModelFacts, n_tokens: int, bytes_per_value: int) -> int:
    """Peak temporaries of one forward of a Llama-style transformers model over `n_tokens` new tokens.

    The loader keeps only the last position's logits, so the peak is inside a block's MLP: the activated
    gate, the up projection and their product (3 * ffn per token) beside four hidden-size tensors (the
    embeddings, the block's input, the residual sum, the normed MLP input) and rotary cos/sin (head_dim
    each). SDPA attention never materialises the scores. This is the live peak; on the CPU, glibc keeps
    part of it in the heap after the call and fragments it (bench/bench_memory_estimate.py measures RSS).
    """
    per_token = 3 * facts.ffn_size + 4 * facts.hidden_size + 2 * facts.head_dim
    return n_tokens * per_token * bytes_per_value


def estimate_transformers(facts: ModelFacts, params: dict[str, Any]) -> MemoryEstimate:
    """Transformers: every weight at the load dtype (or 8/4-bit for block matrices), all on one device.

    KV cache and activations are at the compute dtype (the load dtype; float16 for 8/4-bit). The
    overhead is the activations of a forward over one prompt chunk plus, on a GPU, the CUDA context."""
    device = str(params.get("device", "auto"))
    on_gpu = device == "cuda" or (device == "auto" and available_memory()["vram_total"] > 0)
    choice = str(params.get("dtype", "auto"))
    if choice == "auto":  # as the loader does: the checkpoint's dtype on CUDA, float32 on the CPU
        choice = (facts.dtype or "float16") if on_gpu else "float32"
    if choice not in TORCH_DTYPE_BYTES:
        raise MemoryEstimateError(f"dtype {choice!r} is not one of auto, {', '.join(TORCH_DTYPE_BYTES)}")
    per_value = TORCH_DTYPE_BYTES[choice]
    if params.get("load_in_8bit") or params.get("load_in_4bit"):
        rate = 1.0 if params.get("load_in_8bit") else NF4_BYTES
        rest = facts.n_params - facts.quantizable_params
        weights = round(facts.quantizable_params * rate + rest * 2)
        per_value = 2
    else:
        weights = facts.n_params * per_value
    n_ctx = int(params.get("n_ctx") or min(facts.context_length or DEFAULT_CTX_CAP, DEFAULT_CTX_CAP))
    kv = 2 * facts.n_layers * n_ctx * facts.n_kv_heads * facts.head_dim * per_value
    chunk = min(n_ctx, TRANSFORMERS_PREFILL_CHUNK)  # the loader reads a prompt this many tokens at a time
    overhead = transformers_activation_bytes(facts, chunk, per_value) + (CUDA_RESERVE if on_gpu else 0)
    if on_gpu:
        return _split(weights, 0, kv, overhead, weights + kv + overhead)
    return _split(0, weights, kv, overhead, 0)


def max_gpu_layers(model: ModelFacts | str | Path, params: dict[str, Any], free_vram_bytes: int) -> int:
    """The largest n_gpu_layers whose VRAM fits in `free_vram_bytes` (0 if not even one layer does)."""
    facts = model if isinstance(model, ModelFacts) else read_model(model)
    best = 0
    for ngl in range(1, facts.n_layers + 2):  # VRAM grows with every layer, so stop at the first miss
        if estimate_llamacpp(facts, {**params, "n_gpu_layers": ngl}).vram > free_vram_bytes:
            break
        best = ngl
    return best


#: The llama.cpp loader's n_gpu_layers value for "as many layers as fit in the free VRAM".
AUTO_GPU_LAYERS = -2


def auto_gpu_layers(model: ModelFacts | str | Path, params: dict[str, Any]) -> int:
    """n_gpu_layers for "auto": the most that fit the free VRAM with 5% headroom (0 without a GPU)."""
    free = available_memory()["vram_free"]
    if free <= 0:
        return 0
    if not isinstance(model, ModelFacts):  # the projector (mmproj) goes to the GPU with any offloaded layer
        from webui.gguf_files import projector_bytes

        free -= projector_bytes(model, {**params, "n_gpu_layers": -1}).vram
    return max_gpu_layers(model, {**params, "n_gpu_layers": 0}, int(free * 0.95))


def available_memory() -> dict[str, int]:
    """RAM from psutil; VRAM of CUDA device 0 through torch when it is installed and sees a GPU, else 0."""
    import psutil

    ram = psutil.virtual_memory()
    result = {"ram_total": ram.total, "ram_available": ram.available, "vram_total": 0, "vram_free": 0}
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info(0)
            result.update(vram_total=int(total), vram_free=int(free))
    except (ImportError, RuntimeError):
        pass
    return result


def read_model(path: str | Path) -> ModelFacts:
    """Facts for a GGUF file, a folder holding one, or an HF folder with config.json."""
    path = Path(path)
    if path.is_dir() and not (path / "config.json").is_file():
        from webui.gguf_files import model_ggufs

        ggufs = model_ggufs(path)  # never the projector (mmproj) beside the model
        if ggufs:
            return read_gguf(ggufs[0])
    if path.is_dir():
        return read_hf(path)
    if path.suffix.lower() == ".gguf":
        return read_gguf(path)
    raise MemoryEstimateError(f"{path.name}: expected a .gguf file or a folder with config.json")


_SHARD = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def gguf_shards(path: Path) -> list[Path]:
    """Every file of a split GGUF, given any one of them (`name-00001-of-00003.gguf`, as llama.cpp's
    gguf-split and convert_hf_to_gguf.py --split-max-size write them); [path] for a single file.
    MemoryEstimateError names a missing shard."""
    match = _SHARD.match(path.name)
    if not match or int(match.group("count")) <= 1:
        return [path]
    count = int(match.group("count"))
    shards = [path.with_name(f"{match.group('stem')}-{no:05d}-of-{count:05d}.gguf") for no in range(1, count + 1)]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise MemoryEstimateError(f"{path.name} is one of {count} shards, and {', '.join(missing)} is missing")
    return shards


def read_gguf(path: str | Path) -> ModelFacts:
    """Metadata and tensor infos of a GGUF; a split GGUF is read from every shard (the metadata is the first's)."""
    from gguf import GGUFReader

    path = Path(path)
    shards = gguf_shards(path)
    try:
        readers = [GGUFReader(shard) for shard in shards]
    except (ValueError, OSError) as exc:
        raise MemoryEstimateError(f"{path.name} is not a readable GGUF file: {exc}") from exc
    reader = readers[0]

    def meta(key: str, default: Any = 0) -> Any:
        found = reader.fields.get(key)
        if found is None:
            return default
        value = found.contents()
        return max(value) if isinstance(value, list) and value else value  # per-layer arrays: the largest

    arch = str(meta("general.architecture", "llama"))
    n_layers = int(meta(f"{arch}.block_count"))
    hidden, n_heads = int(meta(f"{arch}.embedding_length")), int(meta(f"{arch}.attention.head_count", 1)) or 1
    layer_bytes, by_type = [0] * n_layers, {}
    layer_moved, output_moved = [(0, 0)] * n_layers, (0, 0)
    input_bytes = output_bytes = n_params = 0
    for tensor in (tensor for shard in readers for tensor in shard.tensors):
        size, kind = int(tensor.n_bytes), tensor.tensor_type.name
        n_params += int(tensor.n_elements)
        by_type[kind] = by_type.get(kind, 0) + size
        extra = extra_buffer_bytes(kind, tuple(int(d) for d in tensor.shape))
        moved = (size, extra) if extra else (0, 0)
        block = re.match(r"blk\.(\d+)\.", tensor.name)
        if block and int(block.group(1)) < n_layers:
            index = int(block.group(1))
            layer_bytes[index] += size
            layer_moved[index] = (layer_moved[index][0] + moved[0], layer_moved[index][1] + moved[1])
        elif tensor.name.startswith("token_embd"):
            input_bytes += size  # read by row (GET_ROWS): never moved
        else:
            output_bytes += size
            output_moved = (output_moved[0] + moved[0], output_moved[1] + moved[1])
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return ModelFacts(
        format="gguf",
        architecture=arch,
        n_params=n_params,
        n_layers=n_layers,
        hidden_size=hidden,
        n_heads=n_heads,
        n_kv_heads=int(meta(f"{arch}.attention.head_count_kv", n_heads)),
        head_dim=int(meta(f"{arch}.attention.key_length", hidden // n_heads)),
        ffn_size=int(meta(f"{arch}.feed_forward_length")),
        vocab_size=int(meta(f"{arch}.vocab_size", len(tokens.data) if tokens else 0)),
        context_length=int(meta(f"{arch}.context_length")),
        file_size=sum(shard.stat().st_size for shard in shards),
        weight_bytes=sum(by_type.values()),
        layer_bytes=tuple(layer_bytes),
        layer_moved=tuple(layer_moved),
        output_moved=output_moved,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        n_experts=int(meta(f"{arch}.expert_count")),
        n_experts_used=int(meta(f"{arch}.expert_used_count")),
        bytes_by_type=by_type,
    )


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file: {tensor name: {dtype, shape, data_offsets}}."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100 * MiB:
            raise MemoryEstimateError(f"{path.name}: implausible safetensors header of {length} bytes")
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


def read_hf(path: str | Path) -> ModelFacts:
    """config.json (its text_config for multimodal models) plus the safetensors headers of an HF folder."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MemoryEstimateError(f"{path.name}: cannot read config.json: {exc}") from exc
    text = {**config, **config.get("text_config", {})}
    n_layers, hidden = int(text.get("num_hidden_layers", 0)), int(text.get("hidden_size", 0))
    n_heads = int(text.get("num_attention_heads", 1)) or 1
    layer_bytes, by_type = [0] * n_layers, {}
    n_params = input_bytes = output_bytes = quantizable = 0
    for file in sorted(path.glob("*.safetensors")):
        for name, info in read_safetensors_header(file).items():
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            size = info["data_offsets"][1] - info["data_offsets"][0]
            n_params += count
            by_type[info["dtype"]] = by_type.get(info["dtype"], 0) + size
            block = re.search(r"\.(?:layers|h|blocks)\.(\d+)\.", name)
            if block and int(block.group(1)) < n_layers:
                layer_bytes[int(block.group(1))] += size
                quantizable += count if len(info["shape"]) == 2 else 0
            elif "embed" in name or "wte" in name:
                input_bytes += size
            else:
                output_bytes += size
    if not n_params:
        raise MemoryEstimateError(f"{path.name} has no safetensors weights to measure")
    dtype = str(text.get("torch_dtype") or text.get("dtype") or "")
    return ModelFacts(
        format="hf",
        architecture=str(text.get("model_type", "")),
        n_params=n_params,
        n_layers=n_layers,
        hidden_size=hidden,
        n_heads=n_heads,
        n_kv_heads=int(text.get("num_key_value_heads") or n_heads),
        head_dim=int(text.get("head_dim") or hidden // n_heads),
        ffn_size=int(text.get("intermediate_size", 0)),
        vocab_size=int(text.get("vocab_size", 0)),
        context_length=int(text.get("max_position_embeddings", 0)),
        file_size=sum(f.stat().st_size for f in path.glob("*.safetensors")),
        weight_bytes=sum(by_type.values()),
        layer_bytes=tuple(layer_bytes),
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        n_experts=int(text.get("num_local_experts") or text.get("num_experts") or 0),
        n_experts_used=int(text.get("num_experts_per_tok") or 0),
        dtype=dtype if dtype in TORCH_DTYPE_BYTES else "",
        bytes_by_type=by_type,
        quantizable_params=quantizable,
    )


def _split(weights_gpu: int, weights_cpu: int, kv: int, overhead: int, vram: int) -> MemoryEstimate:
    total = weights_gpu + weights_cpu + kv + overhead
    return MemoryEstimate(
        int(weights_gpu), int(weights_cpu), int(kv), int(overhead), int(vram), int(total - vram)
    )
