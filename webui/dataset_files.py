"""The datasets folder that LoRA training and perplexity evaluation both read (``user_data/training/datasets/``),
and the one way a dataset file becomes text: UTF-8, not binary, not empty, each refusal naming the file."""

from __future__ import annotations

from pathlib import Path

from webui.errors import HearthError


def datasets_dir(user_data_dir: Path) -> Path:
    return user_data_dir / "training" / "datasets"


def decode_text(data: bytes, name: str, what: str, error: type[HearthError]) -> str:
    """`data` of file `name` as text; `error` (the caller's family: TrainingError, EvaluationError) when it is
    binary, not UTF-8, or empty."""
    if b"\0" in data[:65536]:
        raise error(f"{what} {name!r} is a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {name!r} is not UTF-8 text (byte {exc.start} is invalid)") from None
    if not text.strip():
        raise error(f"{what} {name!r} is empty")
    return text
