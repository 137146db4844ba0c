"""Lorebook (world info): entries whose keywords appear in the recent chat are added to the prompt.

Books are SillyTavern world-info JSON files in ``user_data/lorebooks/`` (import them from the Session
tab, or copy them there). Triggered entries go before or after the character's context (the system
message in instruct modes with one set), within ``budget_tokens``; keywords are looked for in the last
``scan_depth`` messages, the new one included. Works by wrapping the default prompt builder in
``custom_generate_chat_prompt``, so it combines with other extensions that do the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webui.extensions import add_context
from webui.plugins import hookimpl
from webui.safe_files import atomic_write_text, path_inside, safe_name

from .book import Entry, LorebookError, entries_from_data, load_book, render, select

_cache: dict[Path, tuple[float, list[Entry]]] = {}


def lorebook_dir(app: Any) -> Path:
    return Path(app.settings.user_data_dir) / "lorebooks"


def book_entries(folder: Path, books: str) -> list[Entry]:
    """Entries of the named books (comma-separated), or of every book in the folder when none is named."""
    names = [b.strip() for b in books.split(",") if b.strip()]
    paths = [path_inside(folder, n, ".json") for n in names] if names else sorted(folder.glob("*.json"))
    entries: list[Entry] = []
    for path in paths:
        if not path.is_file():
            raise LorebookError(f"lorebook {path.stem!r} not found in {folder}")
        mtime = path.stat().st_mtime
        cached = _cache.get(path)
        if cached is None or cached[0] != mtime:
            cached = _cache[path] = (mtime, load_book(path))
        entries += cached[1]
    return entries


def import_book(folder: Path, filename: str, data: bytes) -> tuple[Path, int]:
    """Validate SillyTavern world info and store it as ``folder/<name>.json``; returns (path, entries)."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LorebookError(f"{filename} is not JSON: {exc}") from None
    entries = entries_from_data(parsed)
    path = path_inside(folder, safe_name(Path(filename).stem), ".json")
    atomic_write_text(path, json.dumps(parsed, ensure_ascii=False, indent=2))
    return path, len(entries)


@hookimpl
def params() -> dict[str, Any]:
    return {"books": "", "budget_tokens": 512, "scan_depth": 4}


@hookimpl
def custom_generate_chat_prompt(user_input: str | None, history: Any, options: Any, character: Any,
                                state: dict[str, Any], build: Any) -> Any:
    settings, app = state["params"], state["app"]
    entries = book_entries(lorebook_dir(app), settings["books"])
    if not entries:
        return None
    messages = [turn.content for turn in history.turns] + ([user_input] if user_input else [])
    model = app.models.require()
    chosen = select(entries, messages, budget=settings["budget_tokens"], scan_depth=settings["scan_depth"],
                    count_tokens=lambda text: len(model.tokenize(text, add_bos=False)))
    if not chosen:
        return None
    before, after = render(chosen)
    options, character = add_context(options, character, before, before=True)
    options, character = add_context(options, character, after)
    return build(user_input, history, options, character)


@hookimpl
def ui(ctx: Any) -> None:
    import gradio as gr

    folder = lorebook_dir(ctx.app)

    def listing() -> str:
        books = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        return "Books: " + (", ".join(f"`{b}`" for b in books) if books else "none yet")

    status = gr.Markdown(listing())
    upload = gr.File(label="Import SillyTavern world info (.json)", file_types=[".json"], type="filepath")

    def on_upload(path: str | None) -> str:
        if not path:
            return listing()
        try:
            saved, count = import_book(folder, Path(path).name, Path(path).read_bytes())
        except (LorebookError, OSError) as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        gr.Info(f"Imported {count} entries as {saved.stem}")
        return listing()

    upload.upload(on_upload, [upload], [status])
