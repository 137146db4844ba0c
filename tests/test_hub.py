"""Downloads through the real huggingface_hub client against tests/fake_hub.py (nothing leaves 127.0.0.1)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_hub import TOKEN, FakeHub
from webui.download import download, format_listing, main
from webui.hub import (
    AccessDenied,
    ChecksumMismatch,
    DownloadCancelled,
    HubConnectionError,
    InvalidRepoName,
    NotFoundOnHub,
    RemoteFile,
    RepoListing,
    SelectionRequired,
    list_repo,
    parse_repo_spec,
)

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 10 << 20  # huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE
QUANTS = {f"tiny.{q}.gguf": f"GGUF {q} ".encode() * 300 for q in ("Q4_K_M", "Q8_0", "IQ3_XS")}
HF_FILES = {
    "config.json": b'{"model_type": "llama"}',
    "tokenizer.json": b"{}",
    "tokenizer_config.json": b"{}",
    "generation_config.json": b"{}",
    "model.safetensors": b"S" * 5000,
    "pytorch_model.bin": b"B" * 5000,
    "original/consolidated.00.pth": b"P" * 100,
}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fake = FakeHub()
    fake.add_repo("someone/tiny-GGUF", {**QUANTS, "README.md": b"# tiny"}, branches={"dev": HF_FILES})
    fake.add_repo("someone/tiny-hf", HF_FILES)
    fake.add_repo("someone/gated", {"only.Q8_0.gguf": b"gated" * 100}, gated=True)
    fake.add_repo("someone/private", {"only.Q8_0.gguf": b"private" * 100}, private=True)
    fake.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)  # read at call time by webui.hub, not at import
    yield fake
    fake.stop()


@pytest.mark.parametrize(
    ("spec", "repo_id", "revision", "folder"),
    [
        ("user/repo", "user/repo", "main", "user_repo"),
        ("user/repo:dev", "user/repo", "dev", "user_repo_dev"),
        ("TheBloke/Llama-2-7B-GGUF", "TheBloke/Llama-2-7B-GGUF", "main", "TheBloke_Llama-2-7B-GGUF"),
        ("https://huggingface.co/user/repo/tree/v1.0", "user/repo", "v1.0", "user_repo_v1.0"),
    ],
)
def test_repo_spec_parsing(spec: str, repo_id: str, revision: str, folder: str) -> None:
    ref = parse_repo_spec(spec)
    assert (ref.repo_id, ref.revision, ref.folder_name) == (repo_id, revision, folder)


@pytest.mark.parametrize(
    "spec", ["", "repo", "a/b/c", "user/re po", "../etc", "user/repo:bad branch", "user/re--po"]
)
def test_bad_repo_names_are_rejected_before_any_request(spec: str) -> None:
    with pytest.raises(InvalidRepoName, match="not a"):
        parse_repo_spec(spec)


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("llama-2-7b.Q4_K_M.gguf", "Q4_K_M"),
        ("Meta-Llama-3-8B-Instruct-Q8_0.gguf", "Q8_0"),
        ("qwen2.5-0.5b-instruct-iq3_xs.gguf", "IQ3_XS"),
        ("model-f16.gguf", "F16"),
        ("model-BF16-00001-of-00002.gguf", "BF16"),
        ("Mistral-7B.Q5_K_S.gguf", "Q5_K_S"),
        ("gemma-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("config.json", None),
        ("qwen2-plain.gguf", None),
    ],
)
def test_quantization_read_from_file_name(name: str, quant: str | None) -> None:
    assert RemoteFile(name, 1).quant == quant


def test_gguf_repo_lists_quants_and_downloads_only_the_pick(hub: FakeHub, tmp_path: Path) -> None:
    listing = list_repo("someone/tiny-GGUF")
    assert set(listing.quantizations()) == {"Q4_K_M", "Q8_0", "IQ3_XS"}
    assert all(f.sha256 and f.size == len(QUANTS[f.path]) for f in listing.ggufs)
    assert "Q8_0" in format_listing(listing)
    with pytest.raises(SelectionRequired, match="pick one"):
        download(listing, tmp_path)
    assert hub.served == []
    events = []
    path = download(listing, tmp_path, select="q8_0", on_progress=events.append)
    assert path == tmp_path / "tiny.Q8_0.gguf"
    assert path.read_bytes() == QUANTS["tiny.Q8_0.gguf"]
    assert hub.served == ["tiny.Q8_0.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.Q8_0.gguf"]
    last = events[-1]
    assert (last.filename, last.downloaded, last.total, last.file_count) == (
        "tiny.Q8_0.gguf",
        path.stat().st_size,
        path.stat().st_size,
        1,
    )
    assert last.fraction == 1.0
    download("someone/tiny-GGUF", tmp_path, select="*Q8_0.gguf")  # already complete: nothing fetched again
    assert hub.served == ["tiny.Q8_0.gguf"]


def test_branch_gives_its_own_files_and_folder(hub: FakeHub, tmp_path: Path) -> None:
    path = download("someone/tiny-GGUF:dev", tmp_path)
    assert path == tmp_path / "someone_tiny-GGUF_dev"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (path / "model.safetensors").read_bytes() == HF_FILES["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["someone_tiny-GGUF_dev"]  # staging folder gone


@pytest.fixture(scope="module")
def big() -> bytes:
    """Larger than huggingface_hub's 10 MiB read chunk, so a transfer can stop after a whole chunk."""
    return os.urandom(CHUNK + (1 << 20))


def test_resume_after_connection_dropped_mid_file(hub: FakeHub, tmp_path: Path, big: bytes) -> None:
    hub.add_repo("someone/big", {"big.Q8_0.gguf": big})
    hub.drop_once["big.Q8_0.gguf"] = CHUNK + 4096
    path = download("someone/big", tmp_path)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(big).digest()
    ranges = [rng for method, url, rng in hub.requests if method == "GET" and url.startswith("/cdn/")]
    assert ranges == [None, f"bytes={CHUNK}-"]  # bytes of the received chunk were kept


def test_cancel_keeps_a_hidden_partial_and_the_next_run_resumes(
    hub: FakeHub, tmp_path: Path, big: bytes
) -> None:
    hub.add_repo("someone/big", {"big.Q8_0.gguf": big})
    cancel = threading.Event()
    with pytest.raises(DownloadCancelled, match="cancelled"):
        download("someone/big", tmp_path, on_progress=lambda event: cancel.set(), cancel=cancel)
    partial = tmp_path / "big.Q8_0.gguf.incomplete"
    assert partial.stat().st_size == CHUNK
    assert not (tmp_path / "big.Q8_0.gguf").exists()
    path = download("someone/big", tmp_path)
    assert path.read_bytes() == big and not partial.exists()
    assert hub.requests[-1][2] == f"bytes={CHUNK}-"


def test_cancel_before_start_fetches_nothing(hub: FakeHub, tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DownloadCancelled):
        download("someone/tiny-hf", tmp_path, cancel=cancel)
    assert hub.served == [] and list(tmp_path.iterdir()) == []


def test_checksum_mismatch_is_rejected_and_the_file_deleted(hub: FakeHub, tmp_path: Path) -> None:
    hub.corrupt.add("tiny.IQ3_XS.gguf")
    with pytest.raises(ChecksumMismatch, match="sha256 .* does not match"):
        download("someone/tiny-GGUF", tmp_path, select="IQ3_XS")
    assert list(tmp_path.iterdir()) == []


def test_missing_repo_branch_and_file_are_404_messages(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(NotFoundOnHub, match="repository nobody/nothing not found"):
        list_repo("nobody/nothing")
    with pytest.raises(NotFoundOnHub, match="branch or revision 'nope' not found"):
        list_repo("someone/tiny-hf:nope")
    with pytest.raises(NotFoundOnHub, match="nothing in someone/tiny-hf matches"):
        download("someone/tiny-hf", tmp_path, select="*.gguf")
    real = list_repo("someone/tiny-hf")
    ghost = RepoListing(real.repo, real.commit, (RemoteFile("ghost.Q4_0.gguf", 10),))
    with pytest.raises(NotFoundOnHub, match="file ghost.Q4_0.gguf not found"):
        download(ghost, tmp_path)


def test_gated_and_private_repos_need_hf_token(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AccessDenied, match="gated.*HF_TOKEN"):
        download("someone/gated", tmp_path)
    with pytest.raises(NotFoundOnHub, match="private or gated, set HF_TOKEN"):
        download("someone/private", tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert download("someone/gated", tmp_path).read_bytes() == b"gated" * 100
    assert download("someone/private", tmp_path).read_bytes() == b"private" * 100


def test_connection_refused_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HubConnectionError, match=f"cannot reach http://127.0.0.1:{port}"):
        download("user/repo", tmp_path, endpoint=f"http://127.0.0.1:{port}")


def test_cli_lists_quants_downloads_and_reports_errors(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["someone/tiny-GGUF", "--models-dir", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "IQ3_XS" in out.out and "--select" in out.err
    assert main(["someone/tiny-GGUF", "--select", "Q4_K_M", "--models-dir", str(tmp_path)]) == 0
    assert (tmp_path / "tiny.Q4_K_M.gguf").is_file()
    assert main(["nobody/nothing", "--models-dir", str(tmp_path)]) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("error: repository nobody/nothing not found")
    )


def test_cli_process_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webui.download", "not a repo", "--models-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "error: 'not a repo' is not a repository name: expected user/repo or user/repo:branch"
    )
