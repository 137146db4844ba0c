"""LoRA adapters on disk: what loras/ holds, names resolved safely, and an adapter checked against a model.

An adapter is a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors`` or ``.bin``) or a GGUF
LoRA adapter file (``general.type == "adapter"`` in its metadata). Names from the UI and the API resolve only
to entries of the LoRA folder, as model names do (`webui.models.is_plain_name`).

Checks run before an adapter touches a model, so a LoRA made for another base model is a `LoraMismatch`
naming the first module that does not fit, and the model stays as it was. PEFT's ``base_model_name_or_path``
is only advice (a fine-tune of the same architecture is a valid base): shapes and module names decide.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from webui.errors import LoaderError, ModelNotFound

PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


class LoraNotFound(ModelNotFound):
    """A LoRA name that is not in the LoRA folder."""


class LoraMismatch(LoaderError):
    """An adapter that does not fit the loaded model (another base model, another architecture)."""


@dataclass(frozen=True)
class LocalLora:
    name: str
    path: Path
    #: "peft" (a PEFT folder) or "gguf" (a GGUF LoRA adapter file).
    kind: str


@dataclass(frozen=True)
class AppliedLora:
    """One adapter applied to the loaded model, with its scale (1.0 = as trained)."""

    name: str
    path: Path
    scale: float


def is_peft_folder(path: Path) -> bool:
    return (
        path.is_dir()
        and (path / "adapter_config.json").is_file()
        and any((path / w).is_file() for w in PEFT_WEIGHTS)
    )


def gguf_type(path: Path) -> str | None:
    """`general.type` of a GGUF file ("model", "adapter"), or None when the file is not a readable GGUF."""
    try:
        import gguf

        field = gguf.GGUFReader(path, "r").get_field("general.type")
        return str(field.contents()) if field is not None else "model"
    except (ValueError, OSError, KeyError, IndexError, struct.error):
        return None


def is_gguf_adapter(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".gguf" and gguf_type(path) == "adapter"


def _as_lora(entry: Path) -> LocalLora | None:
    if entry.name.startswith(".") or entry.name.endswith(".incomplete"):
        return None
    if is_peft_folder(entry):
        return LocalLora(entry.name, entry, "peft")
    if is_gguf_adapter(entry):
        return LocalLora(entry.name, entry, "gguf")
    return None


def discover_loras(loras_dir: Path) -> list[LocalLora]:
    """PEFT folders and GGUF adapters in `loras_dir`, sorted by name (case-insensitive)."""
    if not loras_dir.is_dir():
        return []
    found = [lora for entry in loras_dir.iterdir() if (lora := _as_lora(entry)) is not None]
    return sorted(found, key=lambda lora: lora.name.lower())


def resolve_lora(loras_dir: Path, name: str) -> LocalLora:
    """An adapter of the LoRA folder by its listed name; paths, '..' and anything not listed are LoraNotFound."""
    # imported here: webui.models holds the applied LoRAs and imports this module
    from webui.models import is_plain_name

    lora = _as_lora(loras_dir / name) if is_plain_name(name) else None
    if lora is None:
        available = (
            ", ".join(x.name for x in discover_loras(loras_dir)) or f"none (put adapters in {loras_dir})"
        )
        raise LoraNotFound(f"no LoRA named {name!r} in the LoRA folder. Available: {available}")
    return lora


def resolve_choices(
    loras_dir: Path, names: Iterable[str], scales: Iterable[float] | None = None
) -> list[AppliedLora]:
    """`names` with their `scales` (default 1.0 each) as adapters to apply; duplicates and bad scales refused."""
    names = list(names)
    scales = [1.0] * len(names) if scales is None else [float(s) for s in scales]
    if len(scales) != len(names):
        raise LoaderError(
            f"lora_weights: {len(scales)} weights for {len(names)} LoRAs; give one weight per LoRA"
        )
    seen = [n for i, n in enumerate(names) if n in names[:i]]
    if seen:
        raise LoaderError(f"LoRA {seen[0]!r} is listed twice")
    for name, scale in zip(names, scales, strict=True):
        if not -10.0 <= scale <= 10.0 or scale != scale:
            raise LoaderError(f"LoRA {name!r}: scale {scale} is outside -10..10")
    return [
        AppliedLora(lora.name, lora.path, scale)
        for lora, scale in zip((resolve_lora(loras_dir, n) for n in names), scales, strict=True)
    ]


# -- PEFT adapters ----------------------------------------------------------------------------------------


def peft_config(path: Path) -> dict:
    try:
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LoaderError(f"LoRA {path.name}: adapter_config.json is unreadable ({exc})") from None
    if not isinstance(config, dict) or str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise LoaderError(f"LoRA {path.name}: not a LoRA adapter (peft_type {config.get('peft_type')!r})")
    return config


def peft_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a PEFT adapter's weights (safetensors: from the header, no data read)."""
    weights = path / "adapter_model.safetensors"
    try:
        if weights.is_file():
            with open(weights, "rb") as handle:
                size = struct.unpack("<Q", handle.read(8))[0]
                header = json.loads(handle.read(size))
            return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        import torch

        state = torch.load(path / "adapter_model.bin", map_location="cpu", weights_only=True)
        return {k: tuple(v.shape) for k, v in state.items()}
    except (OSError, ValueError, KeyError, struct.error, RuntimeError) as exc:
        raise LoaderError(f"LoRA {path.name}: its weights are unreadable ({exc})") from None


def _module_of(tensor: str) -> tuple[str, str] | None:
    """('model.layers.0.self_attn.q_proj', 'A') for a PEFT tensor name; None for what is not a LoRA factor."""
    for marker, part in (
        (".lora_A.", "A"),
        (".lora_B.", "B"),
        (".lora_embedding_A", "EA"),
        (".lora_embedding_B", "EB"),
    ):
        if marker in tensor:
            return tensor.split(marker)[0].removeprefix("base_model.model."), part
    return None


def check_peft_shapes(path: Path, base_shape: Callable[[str], tuple[int, ...] | None]) -> None:
    """LoraMismatch unless every module the adapter at `path` targets exists in the model with the shape
    its factors need. `base_shape(module)` is the module's weight shape ([out, in] for a linear layer,
    [rows, dim] for an embedding), or None when the model has no such module."""
    factors: dict[str, dict[str, tuple[int, ...]]] = {}
    for tensor, shape in peft_tensor_shapes(path).items():
        found = _module_of(tensor)
        if found:
            factors.setdefault(found[0], {})[found[1]] = shape
    if not factors:
        raise LoraMismatch(f"LoRA {path.name}: the adapter holds no LoRA weights")
    for module, parts in sorted(factors.items()):
        have = base_shape(module)
        if have is None:
            raise LoraMismatch(
                f"LoRA {path.name} does not fit this model: it targets {module}, which the model "
                "does not have (an adapter for another architecture)"
            )
        if "A" in parts and "B" in parts:
            wants = (parts["B"][0], parts["A"][1])
        elif "EA" in parts and "EB" in parts:
            wants = (parts["EA"][1], parts["EB"][0])
        else:
            continue
        if tuple(have[:2]) != wants:
            raise LoraMismatch(
                f"LoRA {path.name} does not fit this model: {module} is {have[0]}x{have[1]} here, "
                f"the adapter was made for {wants[0]}x{wants[1]} (a LoRA for another base model)"
            )


# -- GGUF adapters ----------------------------------------------------------------------------------------


def gguf_tensor_shapes(path: Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """(general.architecture, tensor name -> ggml shape [ne0, ne1, ...]) from a GGUF header."""
    import gguf

    try:
        reader = gguf.GGUFReader(path, "r")
    except (ValueError, OSError, struct.error) as exc:
        raise LoaderError(f"{path.name} is not a readable GGUF file ({exc})") from None
    arch = reader.get_field("general.architecture")
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    return (str(arch.contents()) if arch is not None else "unknown"), shapes


def check_gguf_adapter(adapter: Path, base: Path, label: str | None = None) -> None:
    """LoraMismatch unless the GGUF adapter's architecture and every ``.lora_a``/``.lora_b`` pair fit the base GGUF."""
    label = label or adapter.name
    if gguf_type(adapter) != "adapter":
        raise LoaderError(
            f"LoRA {label}: {adapter.name} is not a GGUF LoRA adapter (general.type is not 'adapter')"
        )
    arch, shapes = gguf_tensor_shapes(adapter)
    base_arch, base_shapes = gguf_tensor_shapes(base)
    if arch != base_arch:
        raise LoraMismatch(
            f"LoRA {label} does not fit this model: it is for the {arch} architecture, the model is {base_arch}"
        )
    for name, a in sorted(shapes.items()):
        if not name.endswith(".lora_a"):
            continue
        weight = name.removesuffix(".lora_a")
        b = shapes.get(weight + ".lora_b")
        have = base_shapes.get(weight)
        if have is None:
            raise LoraMismatch(
                f"LoRA {label} does not fit this model: it targets {weight}, which the model does not have"
            )
        if b is not None and (have[0], have[1]) != (a[0], b[1]):
            raise LoraMismatch(
                f"LoRA {label} does not fit this model: {weight} is {have[0]}x{have[1]} here, "
                f"the adapter was made for {a[0]}x{b[1]} (a LoRA for another base model)"
            )
