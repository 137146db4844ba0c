"""Training data: files of ``user_data/training/datasets/`` turned into token sequences with labels.

- Raw text (.txt): the whole file tokenized once and cut into chunks of `cutoff_len` tokens, consecutive
  chunks sharing `overlap_len` tokens; every token is learned.
- Records (.json: a list; .jsonl: one object a line), each made text in one of two ways:
  an instruction *format* (``templates/training_formats/NAME.json``: a prompt per set of fields, and the
  field holding the response), or the model's own chat template for records with ``messages``.
  Only the response tokens are learned (labels -100 on the prompt) unless `train_on_inputs`.

A record is a list of segments (text, learned?); segments are tokenized one by one and concatenated so the
boundary between prompt and response is exact. Names resolve only inside the datasets folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.dataset_files import decode_text
from webui.safe_files import UnsafeNameError, path_inside
from webui.training.config import TrainingError, TrainingParams

DATASET_SUFFIXES = (".txt", ".json", ".jsonl")
IGNORE = -100  # the label torch's cross-entropy skips


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class RecordFormat:
    """An instruction format: ``prompts`` maps a comma-joined set of field names to a prompt with
    ``{field}`` placeholders; ``response`` names the field the model learns to write."""

    name: str
    response: str
    prompts: dict[tuple[str, ...], str]

    def segments(self, record: dict[str, Any], where: str) -> list[tuple[str, bool]]:
        answer = record.get(self.response)
        if not isinstance(answer, str) or not answer:
            raise TrainingError(f"{where}: missing field {self.response!r} (format {self.name})")
        present = {k for k, v in record.items() if isinstance(v, str) and v.strip()}
        fitting = [keys for keys in self.prompts if set(keys) <= present]
        if not fitting:
            needed = min(self.prompts, key=len)
            missing = next(k for k in needed if k not in present)
            raise TrainingError(f"{where}: missing field {missing!r} (format {self.name})")
        keys = max(fitting, key=len)
        prompt = self.prompts[keys]
        for key in keys:
            prompt = prompt.replace("{" + key + "}", record[key])
        return [(prompt, False), (answer, True)]


def formats_dir(templates_dir: Path) -> Path:
    return templates_dir / "training_formats"


def list_datasets(folder: Path) -> list[str]:
    """Dataset file names in `folder`, sorted (case-insensitive)."""
    if not folder.is_dir():
        return []
    names = [
        p.name
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in DATASET_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(names, key=str.lower)


def list_formats(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def resolve_dataset(folder: Path, name: str, what: str = "dataset") -> Path:
    """A dataset file of the folder by name; paths and unknown names are TrainingError."""
    try:
        path = path_inside(folder, name, what=what)
    except UnsafeNameError as exc:
        raise TrainingError(str(exc)) from None
    if not path.is_file():
        available = ", ".join(list_datasets(folder)) or f"none (put .txt/.json/.jsonl files in {folder})"
        raise TrainingError(f"{what} {name!r} not found. Available: {available}")
    if path.suffix.lower() not in DATASET_SUFFIXES:
        raise TrainingError(f"{what} {name!r}: expected a .txt, .json or .jsonl file")
    return path


def load_format(folder: Path, name: str) -> RecordFormat:
    try:
        path = path_inside(folder, name, ".json", what="format")
        data = json.loads(path.read_text(encoding="utf-8"))
        prompts = {
            tuple(k.strip() for k in keys.split(",")): str(text) for keys, text in data["prompts"].items()
        }
        return RecordFormat(name, str(data["response"]), prompts)
    except UnsafeNameError as exc:
        raise TrainingError(str(exc)) from None
    except FileNotFoundError:
        raise TrainingError(
            f"format {name!r} not found. Available: auto, raw, chat, {', '.join(list_formats(folder))}"
        ) from None
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise TrainingError(f"format {name!r} is malformed: {exc}") from None


def read_text(path: Path, what: str = "dataset") -> str:
    """The file as UTF-8 text; binary or empty files are TrainingError."""
    return decode_text(path.read_bytes(), path.name, what, TrainingError)


def read_records(path: Path, text: str, what: str = "dataset") -> list[dict[str, Any]]:
    """JSON (a list of objects) or JSONL (one object a line)."""
    try:
        if path.suffix.lower() == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except ValueError as exc:
        raise TrainingError(f"{what} {path.name!r} is not valid JSON: {exc}") from None
    if not isinstance(records, list) or not records:
        raise TrainingError(f"{what} {path.name!r}: expected a non-empty list of records")
    for i, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise TrainingError(f"{what} {path.name!r}: record {i} is not an object")
    return records


def chat_segments(tokenizer: Any, record: dict[str, Any], where: str) -> list[tuple[str, bool]]:
    """The chat template's text of ``messages``, with each assistant message (to its end marker) learned."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TrainingError(f"{where}: missing field 'messages'")
    for j, m in enumerate(messages, 1):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise TrainingError(f"{where}: message {j} needs 'role' and 'content'")
    if not getattr(tokenizer, "chat_template", None):
        raise TrainingError("the loaded model has no chat template: use an instruction format instead")

    def render(upto: int, prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=prompt)

    segments: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, after = render(i, True) if i else "", render(i + 1, False)
        if not before.startswith(done) or not after.startswith(before):
            raise TrainingError(
                "the chat template does not render messages as growing prefixes; use a format"
            )
        segments += [(before[len(done) :], False), (after[len(before) :], True)]
        done = after
    full = render(len(messages), False)
    if full[len(done) :]:
        segments.append((full[len(done) :], False))
    if not any(learn for _, learn in segments):
        raise TrainingError(f"{where}: no assistant message to learn")
    return segments


def encode_segments(
    tokenizer: Any, segments: list[tuple[str, bool]], params: TrainingParams, bos: int | None, eos: int | None
) -> Example:
    ids: list[int] = [bos] if bos is not None else []
    labels: list[int] = [IGNORE] * len(ids)
    for text, learn in segments:
        part = tokenizer.encode(text, add_special_tokens=False)
        ids += part
        labels += part if learn or params.train_on_inputs else [IGNORE] * len(part)
    if eos is not None and segments[-1][1] and (not ids or ids[-1] != eos):
        ids.append(eos)
        labels.append(eos)
    return Example(ids[: params.cutoff_len], labels[: params.cutoff_len])


def chunk_text(ids: list[int], cutoff: int, overlap: int) -> list[Example]:
    """Chunks of `cutoff` tokens, consecutive ones sharing `overlap`; a short tail joins the chunk before."""
    step = max(cutoff - overlap, 1)
    starts = range(0, max(len(ids) - overlap, 1), step)
    return [Example(ids[s : s + cutoff], ids[s : s + cutoff]) for s in starts if len(ids[s : s + cutoff]) > 1]


def load_examples(
    path: Path, tokenizer: Any, params: TrainingParams, formats_folder: Path, *, what: str = "dataset"
) -> list[Example]:
    """Every training sequence of the file, by `params.format` (see the module docstring)."""
    text = read_text(path, what)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    fmt = params.format.strip() or "auto"
    if fmt == "raw" or (fmt == "auto" and path.suffix.lower() == ".txt"):
        ids = ([bos] if bos is not None else []) + tokenizer.encode(text, add_special_tokens=False)
        examples = chunk_text(ids, params.cutoff_len, min(params.overlap_len, params.cutoff_len - 1))
        if not examples:
            raise TrainingError(f"{what} {path.name!r} is too short to train on")
        return examples
    records = read_records(path, text, what)
    if fmt == "auto":
        fmt = "chat" if "messages" in records[0] else "alpaca"
    record_format = None if fmt == "chat" else load_format(formats_folder, fmt)
    examples = []
    for i, record in enumerate(records, 1):
        where = f"{what} {path.name!r} record {i}"
        segments = (
            chat_segments(tokenizer, record, where)
            if record_format is None
            else record_format.segments(record, where)
        )
        ends = (None, None) if record_format is None else (bos, eos)  # a chat template writes its own
        examples.append(encode_segments(tokenizer, segments, params, *ends))
    return examples
