"""The text an evaluation reads: a plain UTF-8 file in ``user_data/training/datasets/`` (the folder LoRA
training reads too). Names resolve only inside that folder; a binary or empty file is refused by name."""

from __future__ import annotations

from pathlib import Path

from webui.dataset_files import datasets_dir, decode_text
from webui.errors import HearthError
from webui.safe_files import is_plain_name, path_inside


class EvaluationError(HearthError):
    """An evaluation cannot start or go on as asked (a bad dataset, model or window size)."""


def list_datasets(user_data_dir: Path) -> list[str]:
    """The .txt files of the datasets folder, by name (what the evaluation panel offers)."""
    folder = datasets_dir(user_data_dir)
    if not folder.is_dir():
        return []
    names = [
        p.name
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() == ".txt" and is_plain_name(p.name)
    ]
    return sorted(names, key=str.lower)


def read_dataset(user_data_dir: Path, name: str) -> str:
    """The text of dataset `name`; EvaluationError (or UnsafeNameError for a path) saying what is wrong."""
    folder = datasets_dir(user_data_dir)
    if not name or not str(name).strip():
        raise EvaluationError("dataset: choose a text file from user_data/training/datasets/")
    path = path_inside(folder, name, what="dataset name")
    if not path.is_file():
        available = ", ".join(list_datasets(user_data_dir)) or "none"
        raise EvaluationError(f"dataset {name!r} is not in {folder} (available: {available})")
    return decode_text(path.read_bytes(), name, "dataset", EvaluationError)
