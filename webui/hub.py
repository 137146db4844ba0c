"""The Hugging Face Hub as Hearth sees it: repo names, what a repo offers, which files to take, errors.

The flow is `list_repo` (one listing pinned to a commit) -> `select_files` (one GGUF quant, or a
Transformers checkpoint with its config and tokenizer) -> `webui.download.download`. The Model tab and
the `python -m webui.download` command drive the same functions.

Every call passes `endpoint=` explicitly: huggingface_hub reads HF_ENDPOINT once at import, so a mirror
set later (or in a test) would otherwise be ignored.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, RepoFile
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from webui.errors import HearthError
from webui.gguf_files import is_projector_name, precision_rank
from webui.safe_files import UnsafeNameError, relative_path_inside

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed hub client
    from httpx import TransportError

DEFAULT_ENDPOINT = "https://huggingface.co"

_REPO_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94})/[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94})")
_REVISION = re.compile(r"[A-Za-z0-9._/-]{1,200}")
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_(?:\d|K|XXS|XS|S|M|L|XL|NL))*|TQ\d_\d|MXFP4|BF16|FP16|F16|FP32|F32)(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")
# Files of a Transformers checkpoint that never belong in a download of its weights.
_OTHER_FORMATS = (
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".ot",
    ".onnx",
    ".onnx_data",
    ".gguf",
    ".tflite",
)


class HubError(HearthError):
    """A download failed for a reason a person can act on; the message is one line."""


class InvalidRepoName(HubError):
    """The text is not `user/repo` or `user/repo:branch`."""


class NotFoundOnHub(HubError):
    """The repository, branch or file does not exist (or is private and no token was given)."""


class AccessDenied(HubError):
    """Gated or private repository without a token that may read it."""


class HubConnectionError(HubError):
    """The endpoint could not be reached (refused, timed out, DNS, TLS)."""


class ChecksumMismatch(HubError):
    """A downloaded file's sha256 differs from the Hub's; the file has been deleted."""


class UnsafeRemotePath(HubError):
    """A repo or file name from the Hub that would land outside the models folder; nothing was written."""


class DownloadCancelled(HubError):
    """The caller's cancel event was set; partial files are kept so the next run resumes."""


class SelectionRequired(HubError):
    """The repo has several GGUF quantizations and the caller must pick one (we never fetch them all)."""

    def __init__(self, listing: RepoListing):
        self.listing = listing
        names = ", ".join(listing.quantizations())
        super().__init__(
            f"{listing.repo.repo_id} has several GGUF files ({names}): pick one with a name or glob"
        )


@dataclass(frozen=True)
class RepoRef:
    """A parsed `user/repo[:branch]`."""

    repo_id: str
    revision: str = "main"

    @property
    def folder_name(self) -> str:
        """models/ folder for multi-file downloads: `user_repo`, plus `_branch` off the main branch."""
        base = self.repo_id.replace("/", "_")
        return base if self.revision == "main" else f"{base}_{self.revision.replace('/', '_')}"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo at the listed commit: sha256 for LFS files, the git blob id for the others."""

    path: str
    size: int
    sha256: str | None = None
    blob_id: str | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def is_projector(self) -> bool:
        """A multimodal projector (``mmproj-*.gguf``): it goes with a model, it is not one."""
        return self.name.lower().endswith(".gguf") and is_projector_name(self.name)

    @property
    def quant(self) -> str | None:
        """Quantization read from a GGUF file name (Q4_K_M, IQ3_XS, BF16, ...); None if not a GGUF or unnamed."""
        if not self.name.lower().endswith(".gguf"):
            return None
        found = _QUANT.findall(_SHARD.sub("", self.name[: -len(".gguf")]))
        label = found[-1].upper() if found else None
        return label[1:] if label in ("FP16", "FP32") else label


@dataclass(frozen=True)
class RepoListing:
    """A repo's files at one commit: every later request uses `commit`, so files never mix versions."""

    repo: RepoRef
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def ggufs(self) -> tuple[RemoteFile, ...]:
        """The model GGUFs (projectors are `projectors`)."""
        return tuple(f for f in self.files if f.name.lower().endswith(".gguf") and not f.is_projector)

    @property
    def projectors(self) -> tuple[RemoteFile, ...]:
        """Multimodal projectors (mmproj) of a vision model's GGUF repo, best first (`projector`)."""
        return tuple(sorted((f for f in self.files if f.is_projector), key=lambda f: (precision_rank(f.name), f.path)))

    @property
    def projector(self) -> RemoteFile | None:
        """The projector fetched with a quant, as llama-server's ``-hf`` does: F16, else BF16, Q8_0, F32."""
        return self.projectors[0] if self.projectors else None

    @property
    def kind(self) -> str:
        """`lora` (a PEFT adapter: adapter_config.json at the top, no full weights), `gguf`, `transformers` (safetensors or
        .bin weights) or `other`."""
        weights = [f for f in self.files if _is_hf_weight(f)]
        if any(f.path == "adapter_config.json" for f in self.files) and all(f.name.startswith("adapter_model") for f in weights):
            return "lora"
        if any(_is_hf_weight(f) for f in self.files):
            return "transformers"
        return "gguf" if self.ggufs else "other"

    def quantizations(self) -> dict[str, tuple[RemoteFile, ...]]:
        """GGUF choices by label; shards of a split GGUF share one label."""
        groups: dict[str, list[RemoteFile]] = {}
        for f in self.ggufs:
            label = f.quant or _SHARD.sub("", f.name[: -len(".gguf")])
            groups.setdefault(label, []).append(f)
        return {label: tuple(files) for label, files in groups.items()}


def parse_repo_spec(spec: str) -> RepoRef:
    """`user/repo`, `user/repo:branch` or a Hub URL (`https://huggingface.co/user/repo/tree/branch`)."""
    text = spec.strip()
    url = re.fullmatch(r"https?://[^/]+/([^/]+/[^/]+?)(?:/tree/(.+?))?/?", text)
    repo_id, _, revision = (url.group(1), "", url.group(2) or "") if url else text.partition(":")
    revision = revision or "main"
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith((".", "-")):
        raise InvalidRepoName(f"{spec!r} is not a repository name: expected user/repo or user/repo:branch")
    if not _REVISION.fullmatch(revision) or ".." in revision:
        raise InvalidRepoName(f"{revision!r} is not a branch name")
    return RepoRef(repo_id, revision)


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The argument, else HF_ENDPOINT read now (huggingface_hub reads it once at import), else huggingface.co."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve_token(token: str | None = None) -> str | None:
    """The argument, else HF_TOKEN; None lets huggingface_hub use a token saved by `hf auth login`."""
    return token or os.environ.get("HF_TOKEN") or None


def list_repo(spec: str | RepoRef, *, token: str | None = None, endpoint: str | None = None) -> RepoListing:
    """All files of a repo with sizes and LFS checksums, pinned to the branch's current commit."""
    ref = spec if isinstance(spec, RepoRef) else parse_repo_spec(spec)
    endpoint = resolve_endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=resolve_token(token))
    with hub_errors(ref, endpoint):
        commit = api.model_info(ref.repo_id, revision=ref.revision).sha
        if not commit:
            raise HubError(
                f"{endpoint} did not return a commit for {ref.repo_id}: is it a Hugging Face Hub endpoint?"
            )
        tree = api.list_repo_tree(ref.repo_id, revision=commit, recursive=True)
        files = tuple(
            RemoteFile(
                entry.path,
                entry.size,
                entry.lfs.sha256 if entry.lfs else None,
                None if entry.lfs else entry.blob_id,
            )
            for entry in tree
            if isinstance(entry, RepoFile)
        )
    return RepoListing(ref, commit, files)


def select_files(listing: RepoListing, select: str | None = None, *, mmproj: bool = True) -> list[RemoteFile]:
    """The files to fetch: `select` is a quant label or a glob; without it, the one obvious choice. A GGUF
    quant of a vision model's repo comes with its projector (`RepoListing.projector`) unless `mmproj` is
    False; a glob takes exactly what it matches."""
    with_projector = [listing.projector] if mmproj and listing.projector is not None else []
    if select:
        by_label = {label.lower(): files for label, files in listing.quantizations().items()}
        if select.lower() in by_label:
            return [*by_label[select.lower()], *with_projector]
        matched = [
            f
            for f in listing.files
            if fnmatch.fnmatchcase(f.path, select) or fnmatch.fnmatchcase(f.name, select)
        ]
        if not matched:
            raise NotFoundOnHub(f"nothing in {listing.repo.repo_id} matches {select!r}")
        return matched
    if listing.kind == "lora":
        return _lora_files(listing.files)
    if listing.kind == "transformers":
        return _transformers_files(listing.files)
    if listing.kind == "gguf":
        choices = listing.quantizations()
        if len(choices) > 1:
            raise SelectionRequired(listing)
        return [*next(iter(choices.values())), *with_projector]
    raise HubError(
        f"{listing.repo.repo_id} has no GGUF, safetensors or .bin weights: pass a file name or glob"
    )


def destination(listing: RepoListing, files: list[RemoteFile], models_dir: Path) -> Path:
    """A lone GGUF goes straight into models/; a quant with its projector into a folder named after the
    quant (models/gemma-3-4b-it-Q4_K_M/, so two quants of one repo stay two models); anything else into
    models/user_repo[_branch]/."""
    if len(files) == 1 and files[0].name.lower().endswith(".gguf"):
        return local_path(models_dir, files[0].name)
    models = [f for f in files if f.name.lower().endswith(".gguf") and not f.is_projector]
    if models and all(f.name.lower().endswith(".gguf") for f in files) and len(models) < len(files):
        return local_path(models_dir, _SHARD.sub("", models[0].name[: -len(".gguf")]))
    return local_path(models_dir, listing.repo.folder_name)


def local_path(folder: Path, relative: str) -> Path:
    """Where a name from the Hub lands under ``folder``; ``..``, absolute paths and the like are refused."""
    try:
        return relative_path_inside(folder, relative, "file name from the Hub")
    except UnsafeNameError as exc:
        raise UnsafeRemotePath(f"refusing to download: {exc}") from None


@contextmanager
def hub_errors(ref: RepoRef, endpoint: str, filename: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub and network exceptions into one-line HubErrors."""
    where = f"{ref.repo_id}:{ref.revision}" if ref.revision != "main" else ref.repo_id
    try:
        yield
    except HubError:
        raise
    except GatedRepoError as exc:
        raise AccessDenied(
            f"{ref.repo_id} is gated: accept its terms on {endpoint}/{ref.repo_id} and set HF_TOKEN"
        ) from exc
    except RevisionNotFoundError as exc:
        raise NotFoundOnHub(f"branch or revision {ref.revision!r} not found in {ref.repo_id}") from exc
    except RemoteEntryNotFoundError as exc:
        raise NotFoundOnHub(f"file {filename or '?'} not found in {where}") from exc
    except RepositoryNotFoundError as exc:  # the Hub answers 401 for private repos too
        raise NotFoundOnHub(
            f"repository {ref.repo_id} not found on {endpoint} (if it is private or gated, set HF_TOKEN)"
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status in (401, 403):
            raise AccessDenied(
                f"access to {ref.repo_id} denied (HTTP {status}): check that HF_TOKEN may read it"
            ) from exc
        raise HubError(f"{endpoint} answered HTTP {status} for {where}") from exc
    except OfflineModeIsEnabled as exc:
        raise HubConnectionError("HF_HUB_OFFLINE is set: downloads are disabled") from exc
    except TransportError as exc:
        raise HubConnectionError(
            f"cannot reach {endpoint}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    except OSError as exc:  # disk full, permissions, or http_get's size consistency check
        raise HubError(f"download of {filename or where} failed: {str(exc).splitlines()[0]}") from exc


def _is_hf_weight(file: RemoteFile) -> bool:
    return "/" not in file.path and (
        file.name.endswith(".safetensors") or re.fullmatch(r"pytorch_model.*\.bin", file.name) is not None
    )


def _lora_files(files: tuple[RemoteFile, ...]) -> list[RemoteFile]:
    """Top-level files of a PEFT adapter (not its training checkpoints); the .bin weights only without safetensors."""
    top = [f for f in files if "/" not in f.path]
    if any(f.name == "adapter_model.safetensors" for f in top):
        top = [f for f in top if f.name != "adapter_model.bin"]
    return top


def _transformers_files(files: tuple[RemoteFile, ...]) -> list[RemoteFile]:
    """Top-level files of a checkpoint: safetensors when present (else .bin), plus config, tokenizer, code."""
    top = [f for f in files if "/" not in f.path]
    if any(f.name.startswith("model") and f.name.endswith(".safetensors") for f in top):
        top = [f for f in top if not f.name.startswith("consolidated")]  # Mistral's duplicate of the weights
    if any(f.name.endswith(".safetensors") for f in top):
        return [
            f
            for f in top
            if f.name.endswith(".safetensors")
            or f.name == "model.safetensors.index.json"
            or not (f.name.endswith(_OTHER_FORMATS) or f.name.startswith("pytorch_model"))
        ]
    return [f for f in top if not f.name.endswith(_OTHER_FORMATS) or _is_hf_weight(f)]
