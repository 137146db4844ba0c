"""GGUF files by role: a model's weights, or a multimodal projector (``mmproj``) that only works beside one.

A vision model in GGUF is two files: the language model and its projector (llama.cpp's ``mmproj-*.gguf``:
the image encoder and the layer that maps its output into the model's embedding space). Every published
projector carries "mmproj" in its name (ggml-org, unsloth, bartowski, LM Studio), and its header says
``general.architecture = clip``. Model discovery, the llama.cpp loader, the download box and the memory
estimate use these functions, so a projector is never listed or loaded as a model, and a model is paired
with its projector the same way everywhere.

Pairing (`find_projector`, the llama.cpp loader's ``mmproj`` parameter): ``auto`` takes a projector from
the model's folder (a folder model), or one beside a loose GGUF file whose name matches the model's; a
candidate whose ``clip.vision.projection_dim`` differs from the model's embedding width is never taken;
among the rest the closest name, then the most precise weights (F16 before BF16, Q8_0, F32) win. A file
name picks that file in the same folder; ``none`` loads the model without vision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.errors import LoaderError
from webui.safe_files import UnsafeNameError, path_inside

_PROJECTOR = re.compile(r"mmproj", re.IGNORECASE)
#: Projector precisions, most wanted first (F16 is what llama.cpp's converter and -hf default to).
PRECISION_ORDER = ("F16", "BF16", "Q8_0", "F32")
_PRECISION = re.compile(r"(?<![A-Za-z0-9])(BF16|F16|FP16|Q8_0|F32|FP32)(?![A-Za-z0-9])", re.IGNORECASE)
_QUANT_WORD = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_(?:\d|K|XXS|XS|S|M|L|XL|NL))*|TQ\d_\d|MXFP4|BF16|FP16|F16|FP32|F32|mmproj|model|gguf)"
    r"(?![A-Za-z0-9])",
    re.IGNORECASE,
)
AUTO, NONE = "auto", "none"


def is_projector_name(name: str) -> bool:
    """Whether a GGUF file name is a multimodal projector's (``mmproj-model-f16.gguf``), not a model's."""
    return bool(_PROJECTOR.search(name))


def model_ggufs(folder: Path) -> list[Path]:
    """The model GGUFs of a folder, sorted (projectors left out): the first is what a folder model loads."""
    return sorted(p for p in folder.glob("*.gguf") if not is_projector_name(p.name))


def projector_ggufs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.gguf") if is_projector_name(p.name))


def precision_rank(name: str) -> int:
    """Position of a projector's precision in `PRECISION_ORDER` (unknown ones last)."""
    found = _PRECISION.findall(name)
    label = found[-1].upper().replace("FP", "F") if found else ""
    return PRECISION_ORDER.index(label) if label in PRECISION_ORDER else len(PRECISION_ORDER)


def _base(name: str) -> str:
    """A GGUF name without quant labels, "mmproj", the suffix and separators: what a model and its
    projector share (``gemma-3-4b-it-Q4_K_M.gguf`` and ``mmproj-gemma-3-4b-it-f16.gguf`` -> ``gemma3 4bit``)."""
    stem = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", stem)
    return re.sub(r"[^a-z0-9]+", "", _QUANT_WORD.sub(" ", stem).lower())


def _related(a: str, b: str) -> bool:
    return bool(a and b) and (a in b or b in a)


def gguf_header(path: Path) -> dict[str, Any]:
    """The scalar metadata of a GGUF file ({} when it cannot be read); tensor data is not touched."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path, "r")
    except (ValueError, OSError, KeyError):
        return {}
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            continue
        try:
            out[key] = field.contents()
        except (ValueError, IndexError, TypeError):
            continue
    return out


def _embedding_width(model_gguf: Path) -> int:
    meta = gguf_header(model_gguf)
    arch = meta.get("general.architecture", "")
    return int(meta.get(f"{arch}.embedding_length") or 0)


def _fits(projector: Path, width: int) -> bool:
    """A projector made for a model of another embedding width can never work with this one."""
    meta = gguf_header(projector)
    dim = int(meta.get("clip.vision.projection_dim") or meta.get("clip.audio.projection_dim") or 0)
    return not width or not dim or dim == width


def check_projector(path: Path) -> Path:
    """`path` if it is a readable projector GGUF; LoaderError (naming the mmproj field) otherwise."""
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise LoaderError(
                f"mmproj: {path.name} is not a GGUF file (bad magic number): it may be corrupt or incomplete"
            )
    if gguf_header(path).get("general.architecture") != "clip":
        raise LoaderError(f"mmproj: {path.name} is not a multimodal projector (its architecture is not clip)")
    return path


def find_projector(path: Path, model_gguf: Path, choice: str) -> Path | None:
    """The projector to load with the model at `path` (a GGUF file or a folder; `model_gguf` the file
    loaded), per the loader's ``mmproj`` value: "auto", "none" or a file name in the model's folder."""
    choice = (choice or AUTO).strip()
    if choice.lower() == NONE:
        return None
    folder = path if path.is_dir() else model_gguf.parent
    if choice.lower() != AUTO:
        try:
            named = path_inside(folder, choice, what="mmproj")
        except UnsafeNameError as exc:
            raise LoaderError(f"{exc}: give a file name in {folder.name}/, 'auto' or 'none'") from None
        if not named.is_file():
            there = ", ".join(p.name for p in projector_ggufs(folder)) or "none"
            raise LoaderError(
                f"mmproj: no file {choice!r} beside the model in {folder.name}/ (projectors there: {there})"
            )
        return check_projector(named)
    candidates = projector_ggufs(folder)
    if not path.is_dir():  # a loose file: only a projector named like it, or the one of a one-model folder
        base = _base(model_gguf.name)
        named_like = [p for p in candidates if _related(_base(p.name), base)]
        candidates = named_like or (candidates if len(model_ggufs(folder)) == 1 else [])
    if not candidates:
        return None
    width = _embedding_width(model_gguf)
    base = _base(model_gguf.name)
    fitting = [p for p in candidates if _fits(p, width)]
    fitting.sort(key=lambda p: (_base(p.name) != base, precision_rank(p.name), p.name))
    return fitting[0] if fitting else None


@dataclass(frozen=True)
class ProjectorBytes:
    """Memory a projector adds: its weights, and the compute buffer for encoding one image, on the GPU
    when the model offloads any layer (the llama.cpp loader's rule), else in RAM."""

    weights: int
    compute: int
    on_gpu: bool

    @property
    def total(self) -> int:
        return self.weights + self.compute

    @property
    def vram(self) -> int:
        return self.total if self.on_gpu else 0

    @property
    def ram(self) -> int:
        return 0 if self.on_gpu else self.total


def projector_bytes(path: str | Path, params: dict[str, Any]) -> ProjectorBytes:
    """What loading the model at `path` with the llama.cpp loader's `params` adds for its projector
    (zeros when none is found or ``mmproj`` is "none"). Only headers are read.

    Weights are exact (tensor bytes). The compute buffer approximates the f32 activations of the encoder
    over one image at its native size: per patch, the attention scores of every head (none with flash
    attention), the MLP's hidden layer twice and four hidden-size tensors."""
    from gguf import GGUFReader

    path = Path(path)
    model = path if path.is_file() else next(iter(model_ggufs(path)), None)
    if model is None:
        return ProjectorBytes(0, 0, False)
    found = find_projector(path, model, str(params.get("mmproj", AUTO)))
    if found is None:
        return ProjectorBytes(0, 0, False)
    reader = GGUFReader(found, "r")
    weights = sum(int(t.n_bytes) for t in reader.tensors)
    meta = gguf_header(found)
    patch = int(meta.get("clip.vision.patch_size") or 0)
    side = int(meta.get("clip.vision.image_size") or 0) // patch if patch else 0
    n_patches = side * side
    heads = 0 if params.get("flash_attn") else int(meta.get("clip.vision.attention.head_count") or 0)
    hidden = int(meta.get("clip.vision.embedding_length") or 0)
    ffn = int(meta.get("clip.vision.feed_forward_length") or 0)
    compute = 4 * n_patches * (heads * n_patches + 2 * ffn + 4 * hidden)
    return ProjectorBytes(weights, compute, on_gpu=int(params.get("n_gpu_layers", 0)) != 0)
