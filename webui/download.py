"""Fetching Hub files into models/: resumable transfers, checksums, progress events, and the command

    python -m webui.download user/repo[:branch] [--select QUANT_OR_GLOB] [--models-dir DIR]

Transfers go through huggingface_hub's own `http_get`, which retries a dropped connection with a Range
request. We hand it our own partial file (`NAME.incomplete`) instead of calling `hf_hub_download`,
because since huggingface_hub 1.x `hf_hub_download` deletes its partial file on failure: a cancelled or
interrupted download could then never be resumed by the next run. Multi-file models are staged in a
hidden `.NAME.incomplete/` folder and renamed at the end, so the model manager never lists a partial model.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from huggingface_hub import get_hf_file_metadata, hf_hub_url
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers

from webui.checksums import already_complete, expected_digest, verify
from webui.hub import (
    DownloadCancelled,
    HubError,
    RemoteFile,
    RepoListing,
    SelectionRequired,
    destination,
    hub_errors,
    list_repo,
    local_path,
    resolve_endpoint,
    resolve_token,
    select_files,
)

PARTIAL_SUFFIX = ".incomplete"
PROGRESS_INTERVAL_S = 0.1


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report: this file's bytes (resumed bytes included) and the whole download's."""

    filename: str
    downloaded: int
    total: int
    speed: float  # bytes/s over this run of this file, resumed bytes excluded
    eta: float | None  # seconds; None until a speed is known
    file_index: int  # 1-based
    file_count: int
    overall_downloaded: int
    overall_total: int

    @property
    def fraction(self) -> float:
        return self.overall_downloaded / self.overall_total if self.overall_total else 1.0


ProgressCallback = Callable[[ProgressEvent], None]


def download(
    spec: str | RepoListing,
    models_dir: str | Path,
    *,
    select: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    loras_dir: str | Path | None = None,
    mmproj: bool = True,
) -> Path:
    """Fetch the selected files into models/ and return the model's path (a .gguf file or a folder); a LoRA
    adapter repo (`RepoListing.kind` "lora") goes into `loras_dir` instead, when given. A GGUF quant of a
    vision model comes with its projector (mmproj) into a folder of its own unless `mmproj` is False.

    Files already in place with the Hub's size and hash are skipped (re-hashed, never trusted by size);
    partial ones are resumed; every file is checked against the Hub's sha256 or git blob id. Raises a
    HubError subclass (`UnsafeRemotePath` for a name that would land outside models/, before any write)."""
    endpoint = resolve_endpoint(endpoint)
    listing = spec if isinstance(spec, RepoListing) else list_repo(spec, token=token, endpoint=endpoint)
    files = select_files(listing, select, mmproj=mmproj)
    models_dir = Path(models_dir)
    if listing.kind == "lora" and loras_dir is not None:
        models_dir = Path(loras_dir)
        models_dir.mkdir(parents=True, exist_ok=True)
    target = destination(listing, files, models_dir)
    single = target.suffix.lower() == ".gguf"
    staging = models_dir if single else models_dir / f".{target.name}{PARTIAL_SUFFIX}"
    # every path is checked before anything is written: a hostile name fails the whole download up front
    places = {f.path: (target, staging / f.name) if single else _places(target, staging, f) for f in files}
    todo = [f for f in files if not any(already_complete(p, f) for p in places[f.path])]
    transfer = _Transfer(listing, endpoint, resolve_token(token), on_progress, cancel, todo)
    for index, file in enumerate(todo, 1):
        transfer.fetch(file, index, places[file.path][1])
    if not single and staging.exists():
        _merge_into(staging, target)
    return target


class _Transfer:
    """State of one `download` call: credentials, totals for progress, the cancel event."""

    def __init__(
        self,
        listing: RepoListing,
        endpoint: str,
        token: str | None,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
        todo: list[RemoteFile],
    ):
        self.listing, self.endpoint, self.token = listing, endpoint, token
        self.on_progress, self.cancel = on_progress, cancel
        self.count = len(todo)
        self.overall_total = sum(f.size for f in todo)
        self.overall_before = 0  # bytes of the files already finished in this call

    def fetch(self, file: RemoteFile, index: int, target: Path) -> None:
        """Download (or resume) one file into `target` via `target.incomplete`, verify it, then rename."""
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelled(f"download of {self.listing.repo.repo_id} cancelled")
        ref = self.listing.repo
        part = target.with_name(target.name + PARTIAL_SUFFIX)
        part.parent.mkdir(parents=True, exist_ok=True)
        with hub_errors(ref, self.endpoint, file.path):
            url = hf_hub_url(ref.repo_id, file.path, revision=self.listing.commit, endpoint=self.endpoint)
            meta = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint)
            headers = build_hf_headers(token=self.token)
            if urlsplit(meta.location).netloc != urlsplit(url).netloc:
                headers.pop("authorization", None)  # never send the token to a CDN
            size = meta.size if meta.size is not None else file.size
            resumed = part.stat().st_size if part.exists() else 0
            if resumed > size:
                part.unlink()
                resumed = 0
            tracker = _FileProgress(self, file.path, index, size, resumed)
            with part.open("ab") as handle:
                http_get(
                    meta.location,
                    _TrackedFile(handle, tracker),  # type: ignore[arg-type]
                    resume_size=resumed,
                    headers=headers,
                    expected_size=size,
                    displayed_filename=file.path,
                    tqdm_class=_SilentBar,  # type: ignore[arg-type]
                )
            tracker.finish()
        verify(part, expected_digest(file, meta.etag), file.path)
        part.replace(target)
        self.overall_before += size


class _FileProgress:
    """Byte counter for one file; emits throttled ProgressEvents and is where a cancel takes effect."""

    def __init__(self, transfer: _Transfer, filename: str, index: int, total: int, resumed: int):
        self.transfer, self.filename, self.index, self.total = transfer, filename, index, total
        self.done = resumed
        self.started, self.start_bytes, self.last_emit = time.monotonic(), resumed, 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last_emit >= PROGRESS_INTERVAL_S:
            self._emit(now)
        cancel = self.transfer.cancel
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled(
                f"download of {self.transfer.listing.repo.repo_id} cancelled at {self.filename}"
            )

    def finish(self) -> None:
        self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        self.last_emit = now
        if self.transfer.on_progress is None:
            return
        elapsed = max(now - self.started, 1e-6)
        speed = max(self.done - self.start_bytes, 0) / elapsed
        eta = (self.total - self.done) / speed if speed > 0 else None
        t = self.transfer
        t.on_progress(
            ProgressEvent(
                self.filename,
                self.done,
                self.total,
                speed,
                eta,
                self.index,
                t.count,
                t.overall_before + self.done,
                t.overall_total,
            )
        )


class _TrackedFile:
    """The partial file as `http_get` sees it: progress counts what reached the disk, and a cancel lands
    after a chunk is written, so the next run resumes from there (tqdm's update comes before the write)."""

    def __init__(self, handle: BinaryIO, tracker: _FileProgress):
        self.handle, self.tracker = handle, tracker

    def write(self, data: bytes) -> int:
        written = self.handle.write(data)
        self.tracker.advance(written)
        return written

    def truncate(self, size: int | None = None) -> int:  # the server ignored our Range: start over
        self.tracker.done = self.handle.truncate(size)
        return self.tracker.done

    def tell(self) -> int:
        return self.handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)


class _SilentBar:
    """`http_get` accepts any callable as `tqdm_class`; ours keeps huggingface_hub's own bar off the terminal."""

    def __init__(self, **_: Any):
        pass

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _places(target: Path, staging: Path, file: RemoteFile) -> tuple[Path, Path]:
    """A folder download's file: where it ends up, and where it is staged (both checked to stay inside)."""
    return local_path(target, file.path), local_path(staging, file.path)


def _merge_into(staging: Path, target: Path) -> None:
    """Publish a finished staging folder: rename it, or move its files into an existing model folder."""
    if not target.exists():
        staging.rename(target)
        return
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dst = target / src.relative_to(staging)
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.replace(dst)
    shutil.rmtree(staging)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def format_listing(listing: RepoListing) -> str:
    """The GGUF choices of a repo, one per line, as the command prints them before asking for --select."""
    rows = [f"{listing.repo.repo_id} @ {listing.commit[:10]}:"]
    for label, files in listing.quantizations().items():
        parts = f" ({len(files)} parts)" if len(files) > 1 else ""
        rows.append(f"  {label:<10} {human_bytes(sum(f.size for f in files)):>10}  {files[0].path}{parts}")
    if listing.projector is not None:
        rows.append(f"  projector  {human_bytes(listing.projector.size):>10}  {listing.projector.path} "
                    "(images; comes with the quant you pick unless --no-mmproj)")
    return "\n".join(rows)


class TerminalBar:
    """A one-line progress bar on stderr for the command; the UI renders the same events its own way."""

    def __init__(self, stream: Any = None):
        self.stream = stream or sys.stderr
        self.last_file = ""

    def __call__(self, event: ProgressEvent) -> None:
        if self.last_file and event.filename != self.last_file:
            self.stream.write("\n")
        self.last_file = event.filename
        pct = 100 * event.downloaded / event.total if event.total else 100.0
        eta = f"ETA {int(event.eta) // 60}:{int(event.eta) % 60:02d}" if event.eta is not None else ""
        self.stream.write(
            f"\r[{event.file_index}/{event.file_count}] {event.filename[-40:]} {pct:5.1f}% "
            f"{human_bytes(event.downloaded)}/{human_bytes(event.total)} {human_bytes(event.speed)}/s {eta}   "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.last_file:
            self.stream.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m webui.download", description="Download a model from Hugging Face."
    )
    parser.add_argument("repo", help="user/repo or user/repo:branch")
    parser.add_argument("--select", help="GGUF quantization (Q4_K_M) or a file name / glob (*.safetensors)")
    parser.add_argument(
        "--models-dir", type=Path, default=Path("models"), help="where models live (default: models)"
    )
    parser.add_argument(
        "--lora-dir", type=Path, default=Path("loras"), help="where LoRA adapter repos go (default: loras)"
    )
    parser.add_argument("--list", action="store_true", help="only list the repo's files")
    parser.add_argument(
        "--no-mmproj", action="store_true",
        help="of a vision model's GGUF repo, take only the quant, not its multimodal projector (mmproj)",
    )
    args = parser.parse_args(argv)
    bar = TerminalBar()
    try:
        listing = list_repo(args.repo)
        if args.list:
            print("\n".join(f"{human_bytes(f.size):>10}  {f.path}" for f in listing.files))
            return 0
        path = download(listing, args.models_dir, select=args.select, on_progress=bar, loras_dir=args.lora_dir,
                        mmproj=not args.no_mmproj)
    except SelectionRequired as exc:
        print(format_listing(exc.listing))
        print("Several quantizations: choose one with --select, e.g. --select Q4_K_M", file=sys.stderr)
        return 2
    except HubError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.close()
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    bar.close()
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
