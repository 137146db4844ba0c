"""What an ExLlamaV2-loadable folder looks like, and whether this machine can run ExLlamaV2 at all.

Everything here works without exllamav2 installed: loader scoring runs for every model in the models
folder on every machine, so it reads only config.json and the JSON header of one safetensors file
(a few kilobytes to a few megabytes), never tensor data, and never imports exllamav2 (whose import
JIT-compiles CUDA kernels).
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

from webui.errors import LoaderError

INSTALL_HINT = (
    "ExLlamaV2 needs an NVIDIA GPU with CUDA and `pip install .[exllamav2]` "
    "(exllamav2 0.3.2 with a CUDA build of PyTorch; ./start.sh offers it where nvidia-smi works)"
)
#: Tensor-name endings that only EXL2 and GPTQ checkpoints use.
_EXL2_SUFFIXES = (".q_weight", ".q_invperm", ".q_scale", ".q_scale_max", ".q_groups")
_GPTQ_SUFFIXES = (".qweight", ".qzeros", ".g_idx")
#: A safetensors header is JSON; real ones are well under this even for 400-shard models.
_MAX_HEADER = 64 << 20


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing or not an object (scoring never raises)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_safetensors_folder(path: Path) -> bool:
    """config.json plus safetensors weights: the only layout exllamav2 reads."""
    return path.is_dir() and (path / "config.json").is_file() and next(path.glob("*.safetensors"), None) is not None


def safetensors_names(file: Path) -> list[str]:
    """Tensor names from a safetensors header (8-byte little-endian length, then JSON); [] if unreadable."""
    try:
        with open(file, "rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                return []
            (size,) = struct.unpack("<Q", raw)
            if not 0 < size <= _MAX_HEADER:
                return []
            header = json.loads(handle.read(size))
    except (OSError, ValueError):
        return []
    return [name for name in header if name != "__metadata__"] if isinstance(header, dict) else []


def quant_format(path: Path) -> str:
    """"exl2", "gptq" or "" (unquantized or unknown) for a model folder.

    config.json's quantization_config names the method in current conversions; GPTQ repos made by
    AutoGPTQ carry quantize_config.json instead; older EXL2 conversions carry neither, so the tensor
    names in the first safetensors file decide (EXL2 writes .q_weight, GPTQ .qweight)."""
    if not is_safetensors_folder(path):
        return ""
    method = str((read_json(path / "config.json").get("quantization_config") or {}).get("quant_method", "")).lower()
    if method in {"exl2", "gptq"}:
        return method
    if method:
        return ""  # awq, bitsandbytes, fp8...: another backend's format
    if (path / "quantize_config.json").is_file():
        return "gptq"
    names = safetensors_names(sorted(path.glob("*.safetensors"))[0])
    if any(name.endswith(_EXL2_SUFFIXES) for name in names):
        return "exl2"
    if any(name.endswith(_GPTQ_SUFFIXES) for name in names):
        return "gptq"
    return ""


def _quant_config(path: Path) -> dict[str, Any]:
    """config.json's quantization_config, or AutoGPTQ's quantize_config.json when there is none."""
    config = read_json(path / "config.json").get("quantization_config") or {}
    return config if isinstance(config, dict) and config else read_json(path / "quantize_config.json")


def gptq_bits(path: Path) -> int | None:
    """The bit width a GPTQ folder declares (None when it declares none, or is not GPTQ)."""
    if quant_format(path) != "gptq":
        return None
    bits = _quant_config(path).get("bits")
    return bits if isinstance(bits, int) and not isinstance(bits, bool) else None


#: exllamav2 0.3.2 runs 4-bit GPTQ only: make_q_matrix (exllamav2_ext/ext_qmatrix.cpp) takes a GPTQ
#: layer's height as qweight rows * 8 and checks qzeros columns * 8 == width, i.e. 8 nibbles per int32.
GPTQ_BITS = 4


def describe_quantization(path: Path) -> str:
    """A short label for the Model tab, e.g. "EXL2 4.25 bpw", "GPTQ 4-bit g128", "fp16"."""
    kind = quant_format(path)
    config = _quant_config(path)
    if kind == "exl2":
        bits = config.get("bits")
        return f"EXL2 {bits} bpw" if bits else "EXL2"
    if kind == "gptq":
        bits, group = config.get("bits"), config.get("group_size")
        return "GPTQ" + (f" {bits}-bit" if bits else "") + (f" g{group}" if group and group > 0 else "")
    return "fp16"


def backend_problem() -> str:
    """Why ExLlamaV2 cannot run here ("" when it can). Cheap: no exllamav2 import, torch is already used."""
    missing = []
    if importlib.util.find_spec("exllamav2") is None:
        missing.append("exllamav2 is not installed")
    import torch

    if not torch.cuda.is_available():
        missing.append("PyTorch sees no CUDA GPU" + ("" if torch.version.cuda else " (this is a CPU-only PyTorch build)"))
    return f"{INSTALL_HINT}. Here: {'; '.join(missing)}." if missing else ""


def parse_gpu_split(text: str) -> list[float] | None:
    """"20,7.5" -> [20.0, 7.5] (GB of VRAM per GPU); "" -> None."""
    if not text.strip():
        return None
    try:
        split = [float(part) for part in text.split(",")]
    except ValueError:
        raise LoaderError(f"gpu_split: expected GB per GPU separated by commas (e.g. 20,7), got {text!r}") from None
    if any(gb <= 0 for gb in split):
        raise LoaderError(f"gpu_split: every GPU needs a positive amount of GB, got {text!r}")
    return split
