"""The second copy llama.cpp's CPU backend makes of some weights: its "extra" buffer types.

When a weight of a matrix multiplication has a faster kernel in another memory layout, llama.cpp's CPU
backend loads it into an extra buffer in that layout (`load_tensors: AMX model buffer size`, `CPU_REPACK model
buffer size`) instead of using the bytes in place. With the file memory-mapped (the default), the mapped
pages it read them from stay resident, so those weights take memory twice; without mmap they take only the
repacked size. Which weights move depends on the CPU, read here from llama.cpp's own system info, with the
rules of the llama.cpp that llama-cpp-python 0.3.36 bundles:

- AMX (x86 with AMX-INT8, tried first; ggml-cpu/amx/amx.cpp `supports_op`, mmq.cpp `get_row_size`): Q4_0, Q4_1,
  Q8_0, Q4_K, Q5_K, Q6_K and IQ4_XS weights with out_features a multiple of 32 and in_features a multiple of
  32 (256 for the K-quants and IQ4_XS). The layout adds 4 bytes per block to Q8_0, Q4_K and Q5_K, 2 to IQ4_XS.
- CPU_REPACK (ggml-cpu/repack.cpp `ggml_repack_get_optimal_repack_type`), same size as stored: with AVX2,
  Q4_0, Q4_K, IQ4_NL and MXFP4 (rows a multiple of 8) and, with AVX-512, Q2_K; on ARM with dot-product
  instructions, Q4_0, Q4_K, Q5_K, Q6_K, Q8_0, IQ4_NL and MXFP4 (rows a multiple of 4, K-quants 8).

Only 2-D weights of matrix multiplications move (the token embedding is read by row and stays).
`tests/test_memory_estimate.py` checks these rules against the buffer sizes llama.cpp reports on the machine
that runs the tests.
"""

from __future__ import annotations

import re
from functools import cache

#: Bytes per block and elements per block of the types that can move (ggml's block layouts).
BLOCKS = {"Q4_0": (18, 32), "Q4_1": (20, 32), "Q8_0": (34, 32), "Q2_K": (84, 256), "Q4_K": (144, 256),
          "Q5_K": (176, 256), "Q6_K": (210, 256), "IQ4_NL": (18, 32), "IQ4_XS": (136, 256), "MXFP4": (17, 32)}
#: AMX's extra bytes per block (a compensation or a scale row), by type.
_AMX_TYPES = {"Q4_0": 0, "Q4_1": 0, "Q8_0": 4, "Q4_K": 4, "Q5_K": 4, "Q6_K": 0, "IQ4_XS": 2}
_X86_REPACK = ("Q4_0", "Q4_K", "IQ4_NL", "MXFP4")
_ARM_REPACK = ("Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "IQ4_NL", "MXFP4")


@cache
def cpu_features() -> frozenset[str]:
    """The CPU backend's features as llama.cpp reports them ("AVX2", "AMX_INT8", "REPACK", ...)."""
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    except (ImportError, OSError, AttributeError):
        return frozenset()
    return frozenset(name for name, on in re.findall(r"(\w+) = (\d)", info) if on == "1")


def extra_buffer_bytes(type_name: str, shape: tuple[int, ...], features: frozenset[str] | None = None) -> int:
    """Bytes a weight of `type_name` and ggml `shape` (in_features, out_features) takes in the CPU backend's
    extra buffer when its matrix multiplication runs on the CPU; 0 when it is used in place."""
    features = cpu_features() if features is None else features
    if len(shape) != 2 or type_name not in BLOCKS:
        return 0
    k, n = int(shape[0]), int(shape[1])
    block_bytes, block_size = BLOCKS[type_name]
    if k % block_size:
        return 0
    blocks = k // block_size * n
    if "AMX_INT8" in features and type_name in _AMX_TYPES and n % 32 == 0 and k % max(32, block_size) == 0:
        return blocks * (block_bytes + _AMX_TYPES[type_name])
    if "REPACK" not in features:
        return 0
    if "AVX2" in features:
        moves = type_name in _X86_REPACK or (type_name == "Q2_K" and "AVX512" in features)
        return blocks * block_bytes if moves and n % 8 == 0 else 0
    if "NEON" in features and ("DOTPROD" in features or "MATMUL_INT8" in features):
        rows = 8 if type_name.endswith("_K") else 4
        return blocks * block_bytes if type_name in _ARM_REPACK and n % rows == 0 else 0
    return 0
