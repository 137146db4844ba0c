"""The memory estimate of an EXL3 folder on ExLlamaV3 (`webui.memory_estimate.estimate` sends it here):
exllamav3's quantized tensors and paged caches, read from the folder's safetensors headers."""

from __future__ import annotations

from typing import Any

from webui.memory_estimate import (
    CUDA_RESERVE,
    DEFAULT_CTX_CAP,
    MemoryEstimate,
    MemoryEstimateError,
    ModelFacts,
    _split,
    transformers_activation_bytes,
)

EXL3_PAGE = 256  # exllamav3 caches hold whole 256-token pages (exllamav3/constants.py PAGE_SIZE)
EXL3_CHUNK = 2048  # tokens per forward of the ExLlamav3 loader (loaders/exllamav3.py CHUNK)


def exl3_kv_bytes_per_value(cache_type: str) -> tuple[float, float]:
    """Bytes per cached key and value for an ExLlamav3 exl3_cache_type ("fp16", "q4", "q8_q4").

    exllamav3's CacheLayer_quant (exllamav3/cache/quant.py) stores each 32 values as `bits` int32 words plus
    one fp16 scale: (4 * bits + 2) / 32 bytes per value; CacheLayer_fp16 stores 2."""
    if cache_type == "fp16":
        return 2.0, 2.0
    try:
        k_bits, v_bits = (int(part) for part in (cache_type[1:].split("_q") * 2)[:2])
    except ValueError:
        raise MemoryEstimateError(f"exl3_cache_type {cache_type!r} is not fp16 or qK[_qV]") from None
    return (4 * k_bits + 2) / 32, (4 * v_bits + 2) / 32


def estimate_exllamav3(facts: ModelFacts, params: dict[str, Any]) -> MemoryEstimate:
    """ExLlamav3 on an EXL3 folder: the quantized tensors as stored (safetensors header bytes) on the GPU,
    an fp16 token embedding in system RAM (exllamav3/modules/embedding.py keeps an unquantized table on the
    CPU), one or two (cfg_cache) KV caches of whole pages, and one chunk's float32 activations."""
    n_ctx = int(params.get("max_seq_len") or min(facts.context_length or DEFAULT_CTX_CAP, DEFAULT_CTX_CAP))
    tokens = -(-n_ctx // EXL3_PAGE) * EXL3_PAGE
    k_bytes, v_bytes = exl3_kv_bytes_per_value(str(params.get("exl3_cache_type", "fp16")))
    per_token = facts.n_layers * facts.n_kv_heads * facts.head_dim * (k_bytes + v_bytes)
    kv = round(tokens * per_token) * (2 if params.get("cfg_cache") else 1)
    weights_gpu = facts.weight_bytes - facts.input_bytes
    overhead = transformers_activation_bytes(facts, min(tokens, EXL3_CHUNK), 4) + CUDA_RESERVE
    return _split(weights_gpu, facts.input_bytes, kv, overhead, weights_gpu + kv + overhead)
