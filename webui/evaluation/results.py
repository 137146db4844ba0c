"""``user_data/logs/evaluations.csv``: one row per evaluated model, appended, never rewritten.

The header is written once, when the file is created; a row is appended under a lock and flushed to disk,
so two evaluations (the UI and the command line) never interleave half rows and a crash loses at most the
row being written. A file from an older Hearth with other columns keeps its own header: rows are written
in its column order (columns it lacks are left out, columns it has that we lack are blank).
"""

from __future__ import annotations

import csv
import io
import os
import threading
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

_LOCK = threading.Lock()
#: Spreadsheets run a cell that starts with one of these as a formula: a comment must not.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class EvaluationResult:
    """One model's figures on one dataset. KL fields are blank without a reference model."""

    model: str
    loader: str
    quantization: str
    loras: str
    dataset: str
    tokens: int
    perplexity: float
    stride: int
    max_length: int
    date: str
    comment: str = ""
    reference: str = ""
    kl_divergence: float | None = None
    top1_agreement: float | None = None

    def csv_row(self) -> dict[str, str]:
        row = {}
        for key, value in asdict(self).items():
            if value is None:
                row[key] = ""
            elif isinstance(value, float):
                row[key] = f"{value:.6f}" if key == "perplexity" else f"{value:.6g}"
            else:
                text = str(value)
                row[key] = "'" + text if text.startswith(_FORMULA_START) else text
        return row


COLUMNS = [f.name for f in fields(EvaluationResult)]


def now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def results_path(user_data_dir: Path) -> Path:
    return user_data_dir / "logs" / "evaluations.csv"


def append_result(user_data_dir: Path, result: EvaluationResult) -> Path:
    """Append one row (and the header when the file is new or empty)."""
    path = results_path(user_data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK, open(path, "a+", encoding="utf-8", newline="") as handle:
        handle.seek(0)
        header = next(csv.reader(io.StringIO(handle.readline())), None)
        columns = header or COLUMNS
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", restval="")
        if not header:
            writer.writeheader()
        writer.writerow(result.csv_row())
        handle.seek(0, os.SEEK_END)
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    return path


def read_results(user_data_dir: Path) -> tuple[list[str], list[list[str]]]:
    """(columns, rows) of the results file, newest row first; our columns when there is no file yet."""
    path = results_path(user_data_dir)
    if not path.is_file():
        return list(COLUMNS), []
    with _LOCK, open(path, encoding="utf-8", newline="") as handle:
        table = [row for row in csv.reader(handle) if row]
    if not table:
        return list(COLUMNS), []
    columns, rows = table[0], table[1:]
    return columns, [(row + [""] * len(columns))[: len(columns)] for row in reversed(rows)]
