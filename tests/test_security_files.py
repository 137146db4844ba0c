"""No name leaves its folder, and files are checked (issue 12, items 4 and 8; item 7: test_crash_safety.py).

Traversal names go through every function that turns a name into a path (stores, the UI handlers that
build paths, extension loading, Hub downloads against tests/fake_hub.py) and must be refused with nothing
written; tampered downloads are caught by the Hub's hashes; PNG bombs are built here.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from PIL import Image

from tests.fake_hub import FakeHub
from webui.config import Settings
from webui.download import download
from webui.errors import HearthError
from webui.extensions import ExtensionManager
from webui.hub import ChecksumMismatch, UnsafeRemotePath, list_repo
from webui.plugins import make_plugin_manager
from webui.prompts import png_card
from webui.prompts.characters import Character, CharacterError, CharacterStore, parse_png_card
from webui.prompts.history import ChatHistory, HistoryStore
from webui.prompts.prompt_store import PromptStore
from webui.prompts.templates import load_template
from webui.safe_files import UnsafeNameError, check_name, safe_name
from webui.sampling import SamplingParams, delete_preset, load_preset, save_preset
from webui.ui.character_panel import CharacterPanel
from webui.ui.history_panel import HistoryPanel

HOSTILE = [
    "../x",
    "../../etc/passwd",
    "/abs/x",
    "/somewhere/CARD",
    "a/b",
    "a\\b",
    "..\\x",
    "..",
    ".",
    "",
    "x\x00y",
    "x\ny",
    "C:evil",
    "C:\\evil",
    ".hidden",
    "CON",
    "nul.txt",
    "x" * 101,
    "trailing.",
]
NORMAL = ["Seraphina", "Mon préréglage 1", "Ёлка 雪", "a..b", "Dr. Who", "20240101-120000-ab12"]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- the one rule --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", HOSTILE)
def test_check_name_refuses_and_safe_name_repairs(name: str) -> None:
    with pytest.raises(UnsafeNameError) as refused:
        check_name(name)
    assert isinstance(refused.value, HearthError)
    assert check_name(safe_name(name)) == safe_name(name)  # free text always becomes an accepted name


@pytest.mark.parametrize("name", NORMAL)
def test_normal_names_are_kept_as_they_are(name: str) -> None:
    assert check_name(f"  {name} ") == name


# -- every store refuses, and writes nothing -----------------------------------------------------------
def store_calls(root: Path) -> list[Callable[[str], Any]]:
    characters, chats, prompts = CharacterStore(root), HistoryStore(root), PromptStore.for_user_data(root)
    presets, templates = root / "presets", root / "templates"
    return [
        characters.load,
        characters.delete,
        lambda n: chats.save(ChatHistory(n, (), "chat")),
        lambda n: chats.save(ChatHistory("Aria", (), n)),
        lambda n: chats.load(n, "chat"),
        lambda n: chats.load("Aria", n),
        lambda n: chats.delete("Aria", n),
        lambda n: chats.list_chats(n),
        lambda n: chats.rename("Aria", n, "new title"),
        lambda n: chats.import_chat(n, '{"turns": []}'),
        lambda n: prompts.save(n, "text"),
        prompts.load,
        prompts.delete,
        lambda n: save_preset(presets, n, SamplingParams(top_k=3)),
        lambda n: load_preset(presets, n),
        lambda n: delete_preset(presets, n),
        lambda n: load_template(templates, n),
    ]


@pytest.mark.parametrize("name", HOSTILE)
def test_every_store_refuses_traversal_names_and_changes_nothing(tmp_path: Path, name: str) -> None:
    root = tmp_path / "user_data"
    (root / "chats" / "Aria").mkdir(parents=True)
    (root / "chats" / "Aria" / "chat.json").write_text('{"turns": []}', encoding="utf-8")
    before = tree(tmp_path)
    for call in store_calls(root):
        with pytest.raises(HearthError):
            call(name)
    assert tree(tmp_path) == before


def test_normal_names_still_round_trip(tmp_path: Path) -> None:
    chats, prompts = HistoryStore(tmp_path), PromptStore.for_user_data(tmp_path)
    for name in NORMAL:
        chats.save(ChatHistory(name, (), name))
        assert chats.load(name, name).chat_id == name
        assert prompts.load(prompts.save(name, "t")) == "t"
        save_preset(tmp_path / "presets", name, SamplingParams(top_k=2))
        assert load_preset(tmp_path / "presets", name).top_k == 2


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret", encoding="utf-8")
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "link.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(UnsafeNameError, match="inside"):
        PromptStore.for_user_data(tmp_path).load("link")


def test_files_named_outside_hearth_are_not_listed(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    for stem in ("ok", ".hidden", "what?"):
        (tmp_path / "prompts" / f"{stem}.txt").write_text("x", encoding="utf-8")
    assert PromptStore.for_user_data(tmp_path).names() == ["ok"]


# -- characters: a card's name is content, its key is a file name --------------------------------------
def test_card_named_like_a_path_is_stored_inside_under_a_plain_key(tmp_path: Path) -> None:
    store = CharacterStore(tmp_path / "user")
    for hostile in ("/somewhere/CARD", "../../evil", "CON"):
        path = store.save(Character(hostile, "c"))
        assert path.parent == tmp_path / "user" / "characters" and check_name(path.stem) == path.stem
        assert store.load(path.stem).name == hostile
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"]


# -- UI handlers that build paths ----------------------------------------------------------------------
def test_history_download_of_a_path_named_character_stays_in_the_export_folder(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    panel = HistoryPanel(HistoryStore(tmp_path / "user"), export)
    history = ChatHistory("/somewhere/CARD", (), "../../chat-id").to_dict()
    path = Path(panel.download(history, {"character": "/somewhere/CARD"}))
    assert path.parent == export and path.name.startswith("_somewhere_CARD-") and check_name(path.stem)
    assert tree(tmp_path) == {"export", f"export/{path.name}"}


def test_uploaded_card_with_an_absolute_name_stays_in_the_characters_folder(tmp_path: Path) -> None:
    card = tmp_path / "upload" / "card.json"
    card.parent.mkdir()
    card.write_text('{"name": "/somewhere/CARD", "description": "d"}', encoding="utf-8")
    store = CharacterStore(tmp_path / "user")
    *_, state = CharacterPanel(store).upload(str(card), {"mode": "chat"})
    assert state["mode"] == "chat" and state["character"] == "_somewhere_CARD"
    assert (tmp_path / "user" / "characters" / "_somewhere_CARD.yaml").is_file()
    export = tmp_path / "export"
    export.mkdir()
    history = ChatHistory.new(state["character"]).to_dict()
    assert (
        Path(HistoryPanel(HistoryStore(tmp_path / "user"), export).download(history, state)).parent == export
    )


@pytest.mark.parametrize("name", ["../../evil", "/etc/passwd"])
def test_character_panel_refuses_a_traversal_name_with_a_toast(tmp_path: Path, name: str) -> None:
    panel = CharacterPanel(CharacterStore(tmp_path))
    with pytest.raises(gr.Error, match="not allowed"):
        panel.select(name, {})
    with pytest.raises(gr.Error, match="not allowed"):
        panel.delete(name, {})
    assert list(tmp_path.iterdir()) == []


# -- extensions by name --------------------------------------------------------------------------------
def test_extension_names_never_reach_outside_the_extensions_folder(tmp_path: Path) -> None:
    folder, outside = tmp_path / "extensions", tmp_path / "outside" / "evil"
    folder.mkdir()
    outside.mkdir(parents=True)
    (outside / "script.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n", encoding="utf-8")
    manager = ExtensionManager(make_plugin_manager(), Settings(), folders=(folder,), entry_points=False)
    for name in ("../outside/evil", str(outside), "..", "evil"):
        assert manager.enable(name) is False
    assert not (tmp_path / "ran").exists()
    assert all("not found" in n.message for n in manager.notices)


# -- downloads -----------------------------------------------------------------------------------------
@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    fake = FakeHub()
    fake.add_repo(
        "someone/tiny-hf", {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"S" * 500}
    )
    fake.add_repo("someone/tiny-GGUF", {"tiny.Q8_0.gguf": b"GGUF" * 100})
    fake.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    yield fake
    fake.stop()


@pytest.mark.parametrize(
    "hostile",
    [
        "../evil.json",
        "/abs/evil.json",
        "sub/../../evil.json",
        "..\\evil.json",
        "sub/./x.json",
        "C:/evil.json",
    ],
)
def test_hub_file_names_never_write_outside_the_models_folder(
    hub: FakeHub, tmp_path: Path, hostile: str
) -> None:
    hub.add_repo(
        "someone/hostile", {"model.safetensors": b"S" * 100, "config.json": b"{}", hostile: b"pwned"}
    )
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(UnsafeRemotePath, match="refusing to download"):
        download("someone/hostile", models, select="*")
    assert tree(tmp_path) == {"models"} and hub.served == []


def test_listing_carries_blob_ids_for_small_files_and_sha256_for_lfs(hub: FakeHub) -> None:
    files = {f.path: f for f in list_repo("someone/tiny-hf").files}
    config = b'{"model_type": "llama"}'
    assert files["config.json"].blob_id == hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()
    assert files["config.json"].sha256 is None
    assert files["model.safetensors"].sha256 == hashlib.sha256(b"S" * 500).hexdigest()


def test_a_tampered_small_file_is_caught(hub: FakeHub, tmp_path: Path) -> None:
    hub.corrupt.add("config.json")
    with pytest.raises(ChecksumMismatch, match="config.json: git blob id .* does not match"):
        download("someone/tiny-hf", tmp_path)
    assert not (tmp_path / "someone_tiny-hf").exists()
    assert not list(tmp_path.rglob("config.json*"))


@pytest.mark.parametrize(
    ("repo", "name"),
    [
        ("someone/tiny-hf", "someone_tiny-hf/config.json"),
        ("someone/tiny-hf", "someone_tiny-hf/model.safetensors"),
        ("someone/tiny-GGUF", "tiny.Q8_0.gguf"),
    ],
)
def test_a_tampered_existing_file_is_rechecked_and_fetched_again(
    hub: FakeHub, tmp_path: Path, repo: str, name: str
) -> None:
    download(repo, tmp_path)
    path = tmp_path / name
    good = path.read_bytes()
    path.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])  # same size: a size check alone trusts it
    hub.served.clear()
    download(repo, tmp_path)
    assert path.read_bytes() == good and hub.served == [path.name]
    download(repo, tmp_path)  # intact now: nothing fetched
    assert hub.served == [path.name]


# -- PNG cards: limits before decoding -----------------------------------------------------------------
def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int = 2, height: int = 2, *extra: bytes) -> bytes:
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return png_card.PNG_SIGNATURE + header + b"".join(extra) + chunk(b"IEND", b"")


def zlib_bomb(size: int) -> bytes:
    packer, zeros = zlib.compressobj(9), bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(size >> 20)) + packer.flush()


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt"])
def test_a_zlib_bomb_card_is_refused_without_inflating_it(tmp_path: Path, kind: bytes) -> None:
    bomb = zlib_bomb(256 << 20)
    body = b"chara\0\0" + bomb if kind == b"zTXt" else b"chara\0\1\0\0\0" + bomb
    card = png(2, 2, chunk(kind, body))
    assert len(card) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(CharacterError, match="zlib bomb"):
            CharacterStore(tmp_path).import_file(card, "bomb.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * png_card.MAX_TEXT_BYTES  # bounded by the limit (a buffer resize: 2x), not by 256 MiB
    assert list(tmp_path.iterdir()) == []


def test_a_huge_image_is_refused_from_its_header(tmp_path: Path) -> None:
    with pytest.raises(CharacterError, match="100000x100000 pixels"):
        parse_png_card(png(100_000, 100_000))
    with pytest.raises(CharacterError, match="pixels"):
        CharacterStore(tmp_path).save(Character("Big", picture=png(100_000, 100_000)))
    assert list(tmp_path.iterdir()) == []


def test_limits_follow_pillows_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 40)).save(jpeg, format="JPEG")
    png_card.check_picture(jpeg.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(CharacterError, match="pixels"):
        png_card.check_picture(jpeg.getvalue())
    with pytest.raises(CharacterError, match="40x40 pixels"):
        png_card.png_text_chunks(png(40, 40))
    monkeypatch.setattr(png_card, "MAX_CARD_BYTES", 100)
    with pytest.raises(CharacterError, match="at most"):
        png_card.png_text_chunks(png(2, 2, chunk(b"tEXt", b"chara\0" + b"x" * 200)))
