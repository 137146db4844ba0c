"""What an EXL3 folder looks like, and whether this machine can run ExLlamaV3 at all.

Everything here works without exllamav3 installed: loader scoring runs for every model in the models folder
on every machine, so it reads config.json and at most one safetensors header, never tensor data, and never
imports exllamav3 (whose import builds its CUDA extension).

exllamav3 1.6.5 writes `quantization_config` into config.json when it compiles a conversion
(exllamav3/conversion/compile.py): {"quant_method": "exl3", "version", "bits", "head_bits", ...}; its quantized
linear layers are stored as `<layer>.trellis` with `.suh`/`.svh` sign vectors (exllamav3/modules/quant/exl3.py),
which identifies a folder whose config.json was edited by hand.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from loaders.exl2_detect import is_safetensors_folder, read_json, safetensors_names

INSTALL_HINT = (
    "ExLlamaV3 needs an NVIDIA GPU with CUDA and `pip install .[exllamav3]` "
    "(exllamav3 1.6.5 with a CUDA build of PyTorch; it compiles its CUDA kernels on first use)"
)
_EXL3_SUFFIXES = (".trellis", ".suh", ".svh")


def is_exl3(path: Path) -> bool:
    """An EXL3 conversion: quant_method "exl3" in config.json, or EXL3 trellis tensors when it names none."""
    if not is_safetensors_folder(path):
        return False
    quant = read_json(path / "config.json").get("quantization_config")
    method = str(quant.get("quant_method", "")).lower() if isinstance(quant, dict) else ""
    if method:
        return method == "exl3"
    names = safetensors_names(sorted(path.glob("*.safetensors"))[0])
    return any(name.endswith(_EXL3_SUFFIXES) for name in names)


def describe_quantization(path: Path) -> str:
    """A short label for the Model tab, e.g. "EXL3 4.0 bpw (head 6 bits)", or "EXL3" when bits are unknown."""
    if not is_exl3(path):
        return "fp16"
    quant = read_json(path / "config.json").get("quantization_config")
    quant = quant if isinstance(quant, dict) else {}
    bits, head = quant.get("bits"), quant.get("head_bits")
    label = f"EXL3 {bits} bpw" if isinstance(bits, int | float) and not isinstance(bits, bool) else "EXL3"
    return label + (
        f" (head {head} bits)" if isinstance(head, int | float) and not isinstance(head, bool) else ""
    )


def backend_problem() -> str:
    """Why ExLlamaV3 cannot run here ("" when it can). Cheap: no exllamav3 import, torch is already used."""
    missing = []
    if importlib.util.find_spec("exllamav3") is None:
        missing.append("exllamav3 is not installed")
    import torch

    if not torch.cuda.is_available():
        missing.append(
            "PyTorch sees no CUDA GPU" + ("" if torch.version.cuda else " (this is a CPU-only PyTorch build)")
        )
    return f"{INSTALL_HINT}. Here: {'; '.join(missing)}." if missing else ""
