"""Images in chats (issue 18), the message side: a turn's images saved beside the chat and read back,
edited and branched with it; image markers in the prompt in each chat mode; the chat service sending a
message's images to a scripted vision model (tests/scripted_loader.py), again on regenerate; a model
without vision (or over its limit) refused before anything is saved."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from tests.scripted_loader import write_script
from webui.chat_service import ChatOptions, ChatService
from webui.media import MEDIA_MARKER, Image, MediaError
from webui.prompts.characters import Character
from webui.prompts.chat import branch, build_chat_prompt, edit_turn, show_version
from webui.prompts.history import ChatHistory, HistoryError, HistoryStore, Turn
from webui.prompts.history_media import MEDIA_NOTES

SETTINGS: dict[str, Any] = {"max_new_tokens": 8, "sampling": {"temperature": 0}}


def picture(color: tuple[int, int, int], size: tuple[int, int] = (16, 12), fmt: str = "PNG") -> Image:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, fmt)
    return Image.from_bytes(buffer.getvalue())


RED, BLUE, GREEN = picture((255, 0, 0)), picture((0, 0, 255), fmt="JPEG"), picture((0, 255, 0))


def with_pictures(character: str = "Aria") -> ChatHistory:
    return (
        ChatHistory.new(character, greeting="Ahoy!")
        .with_turn("user", "What is this?", images=[RED, BLUE])
        .with_turn("assistant", "Red and blue.")
        .with_turn("user", "And this?", images=[RED])
    )


def shas(images: tuple[Image, ...] | list[Image]) -> list[str]:
    return [image.sha256 for image in images]


# -- the history on disk ----------------------------------------------------------------------------
def test_images_are_saved_once_beside_the_chat_and_read_back(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    history = with_pictures()
    path = store.save(history)
    media = path.with_suffix(".media")
    assert sorted(p.name for p in media.iterdir()) == sorted({RED.file_name, BLUE.file_name})  # RED once
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 3
    images = data["turns"][1]["images"]
    assert images == [RED.file_name, BLUE.file_name]  # by file name, no pixels in the JSON
    assert "base64" not in path.read_text(encoding="utf-8")
    loaded = store.load("Aria", history.chat_id)
    assert loaded == history
    assert [shas(t.images) for t in loaded.turns] == [[], [RED.sha256, BLUE.sha256], [], [RED.sha256]]
    assert loaded.turns[1].images[1].mime == "image/jpeg"
    assert [c.chat_id for c in store.list_chats("Aria")] == [history.chat_id]


def test_chat_without_images_is_written_as_before(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    plain = ChatHistory.new("Aria").with_turn("user", "hi")
    path = store.save(plain)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 2 and "images" not in data["turns"][0]
    assert not path.with_suffix(".media").exists()
    assert store.load("Aria", plain.chat_id) == plain


def test_unreferenced_images_are_removed_and_deleting_removes_the_folder(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    history = with_pictures()
    media = store.save(history).with_suffix(".media")
    shorter = history.with_turns(history.turns[:1] + history.turns[3:])  # only the last message's RED is left
    store.save(shorter)
    assert [p.name for p in media.iterdir()] == [RED.file_name]
    assert store.load("Aria", history.chat_id) == shorter
    store.save(shorter.with_turns(shorter.turns[:1]))  # no image left: no folder
    assert not media.exists()
    store.save(history)
    store.delete("Aria", history.chat_id)
    assert not media.exists() and not any((tmp_path / "chats" / "Aria").iterdir())


def test_branch_and_rename_get_their_own_files(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    history = with_pictures()
    store.save(history)
    copy = branch(history, 1)
    store.save(copy)
    assert copy.chat_id != history.chat_id and shas(copy.turns[1].images) == [RED.sha256, BLUE.sha256]
    store.delete("Aria", history.chat_id)
    assert store.load("Aria", copy.chat_id) == copy  # the branch does not share the original's files
    renamed = store.rename("Aria", copy.chat_id, "Colours")
    folder = tmp_path / "chats" / "Aria"
    assert sorted(p.name for p in folder.iterdir()) == ["Colours.json", "Colours.media"]
    assert store.load("Aria", "Colours").turns == copy.turns == renamed.turns


def test_a_missing_or_corrupt_image_leaves_a_note_not_a_broken_chat(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    history = with_pictures()
    media = store.save(history).with_suffix(".media")
    (media / BLUE.file_name).unlink()
    (media / RED.file_name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    loaded = store.load("Aria", history.chat_id)
    assert [t.content for t in loaded.turns] == [t.content for t in history.turns]
    assert loaded.images == ()
    notes = loaded.turns[1].metadata[MEDIA_NOTES]
    assert len(notes) == 2 and "image 1 could not be loaded" in notes[0] and "image 2" in notes[1]
    assert "missing" in notes[1] and BLUE.file_name in notes[1]
    assert "chats" not in " ".join(notes)  # names the file, not the server's folders
    store.save(loaded)  # saved again, the note stays and the broken file goes
    again = store.load("Aria", history.chat_id)
    assert again.turns[1].metadata[MEDIA_NOTES] == notes and not media.exists()


def test_a_stored_name_that_is_not_an_image_file_is_refused(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    path = store.save(ChatHistory.new("Aria").with_turn("user", "hi"))
    data = json.loads(path.read_text(encoding="utf-8"))
    data["turns"][0]["images"] = ["../../secret.png"]
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded = store.load("Aria", path.stem)
    assert (
        loaded.turns[0].images == ()
        and "not the name of a stored image" in loaded.turns[0].metadata[MEDIA_NOTES][0]
    )
    data["turns"][0]["images"] = "red.png"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(HistoryError, match="images must be a list"):
        store.load("Aria", path.stem)


def test_dict_and_export_carry_images_inline(tmp_path: Path) -> None:
    history = with_pictures()
    data = history.to_dict()  # what the Chat tab keeps between clicks
    assert data["turns"][1]["images"][0].startswith("data:image/png;base64,")
    assert ChatHistory.from_data(data, "Aria") == history
    assert history.to_dict()["turns"][1]["images"][0] is data["turns"][1]["images"][0]  # encoded once
    store = HistoryStore(tmp_path)
    imported = store.import_chat("Aria", history.to_json())  # a downloaded chat is the whole chat
    assert imported.images == history.images
    assert (tmp_path / "chats" / "Aria" / f"{imported.chat_id}.media" / BLUE.file_name).is_file()
    saved_form = json.loads((tmp_path / "chats" / "Aria" / f"{imported.chat_id}.json").read_text("utf-8"))
    loose = ChatHistory.from_data(saved_form, "Aria")  # a saved file imported without its folder
    assert loose.images == () and "stored beside the saved chat" in loose.turns[1].metadata[MEDIA_NOTES][0]


def test_edits_versions_and_branches_keep_a_turns_images() -> None:
    history = with_pictures()
    edited = edit_turn(history, 1, "What colours are these?")
    assert edited.turns[1].content == "What colours are these?" and edited.turns[1].images == (RED, BLUE)
    turn = Turn("user", "look", {}, (GREEN,))
    assert turn.with_version("look again").images == (GREEN,) and turn.at_version(0).images == (GREEN,)
    versions = history.with_turns((*history.turns[:2], history.turns[2].with_version("Purple?")))
    assert show_version(versions, 2, 0).turns[1].images == (RED, BLUE)
    assert branch(history, 3).images == history.images
    with pytest.raises(HistoryError, match="tool message cannot hold images"):
        history.with_turn("tool", "result", images=[RED])


# -- prompts --------------------------------------------------------------------------------------
def prompt(history: ChatHistory, text: str | None, mode: str, budget: int = 10_000, **kwargs: Any):
    return build_chat_prompt(
        history,
        text,
        mode=mode,
        character=Character("Bot", context="A bot."),  # type: ignore[arg-type]
        user_name="Ann",
        template_text=_CHATML,
        count_tokens=len,
        max_prompt_tokens=budget,
        **kwargs,
    )


_CHATML = (Path(__file__).resolve().parent.parent / "templates" / "ChatML.jinja").read_text(encoding="utf-8")


def test_instruct_puts_markers_before_the_text_in_the_message() -> None:
    built = prompt(with_pictures(), "Last one", "instruct", images=[GREEN])
    assert built.images == (RED, BLUE, RED, GREEN)
    assert built.text.count(MEDIA_MARKER) == 4
    assert f"<|im_start|>user\n{MEDIA_MARKER}\n{MEDIA_MARKER}\nWhat is this?<|im_end|>" in built.text
    assert f"<|im_start|>user\n{MEDIA_MARKER}\nLast one<|im_end|>" in built.text
    assert built.messages is not None and built.messages[-1]["content"] == f"{MEDIA_MARKER}\nLast one"
    only_image = prompt(ChatHistory.new("Bot"), None, "instruct", images=[GREEN])
    assert only_image.images == (GREEN,) and f"<|im_start|>user\n{MEDIA_MARKER}<|im_end|>" in only_image.text


@pytest.mark.parametrize("mode", ["chat", "chat-instruct"])
def test_chat_modes_put_markers_in_the_turns_line(mode: str) -> None:
    built = prompt(with_pictures(), "Last one", mode, images=[GREEN])
    assert built.images == (RED, BLUE, RED, GREEN) and built.text.count(MEDIA_MARKER) == 4
    assert f"Ann: {MEDIA_MARKER}\n{MEDIA_MARKER}\nWhat is this?\nBot: Red and blue.\n" in built.text
    assert f"Ann: {MEDIA_MARKER}\nLast one\n" in built.text


def test_dropped_turns_drop_their_images() -> None:
    history = with_pictures().with_turn("assistant", "Red again.")
    whole = prompt(history, "Now?", "chat")
    cut = prompt(history, "Now?", "chat", budget=len(whole.text) - 10)
    assert cut.dropped_turns == 2 and cut.images == (RED,) and cut.text.count(MEDIA_MARKER) == 1
    assert "What is this?" not in cut.text


def test_continuing_a_reply_with_a_picture_keeps_it_last() -> None:
    history = with_pictures().with_turn("assistant", "It is", images=[GREEN])
    built = prompt(history, None, "instruct", continue_last=True)
    assert built.images == (RED, BLUE, RED, GREEN)
    assert built.text.endswith(f"{MEDIA_MARKER}\nIt is")


# -- the chat service with a scripted vision model --------------------------------------------------
def load(app: Any, vision: int, name: str = "seer") -> ChatService:
    write_script(app.settings.models_dir, name, ["I", " see"], n_ctx=4096, vision=vision)
    app.models.load(name)
    return ChatService(app)


def test_stream_reply_sends_the_images_and_regenerate_sends_them_again(scripted_app: Any) -> None:
    service = load(scripted_app, vision=4)
    model = scripted_app.models.model
    history = ChatHistory.new("Assistant")
    *_, last = service.stream_reply(history, "What is this?", ChatOptions(), SETTINGS, images=[RED, BLUE])
    assert last.text == "I see" and model.seen_images == [[RED.sha256, BLUE.sha256]]
    user = last.history.turns[-2]
    assert user.content == "What is this?" and user.images == (RED, BLUE)
    saved = service.histories.load("Assistant", history.chat_id)
    assert saved == last.history and saved.turns[-2].images == (RED, BLUE)

    *_, again = service.stream_reply(
        saved.with_turns(saved.turns[:-1]), None, ChatOptions(), SETTINGS, replacing=saved.turns[-1]
    )
    assert model.seen_images[-1] == [RED.sha256, BLUE.sha256] and again.history.turns[-1].version_count == 2
    *_, more = service.stream_reply(again.history, None, ChatOptions(), SETTINGS, continue_last=True)
    assert model.seen_images[-1] == [RED.sha256, BLUE.sha256]
    *_, image_only = service.stream_reply(
        more.history, None, ChatOptions(mode="instruct"), SETTINGS, images=[GREEN]
    )
    assert model.seen_images[-1] == [RED.sha256, BLUE.sha256, GREEN.sha256]
    assert image_only.history.turns[-2] == Turn("user", "", {}, (GREEN,))


def test_a_model_without_vision_refuses_before_anything_is_saved(scripted_app: Any) -> None:
    service = load(scripted_app, vision=0, name="blind")
    history = ChatHistory.new("Assistant").with_turn("user", "hi").with_turn("assistant", "hello")
    service.histories.save(history)
    before = (service.histories.root / "Assistant" / f"{history.chat_id}.json").read_bytes()
    with pytest.raises(MediaError, match="blind has no vision") as caught:
        next(service.stream_reply(history, "Look", ChatOptions(), SETTINGS, images=[RED]))
    assert "load a vision model" in str(caught.value)
    with pytest.raises(MediaError, match="blind has no vision"):
        service.check_images(history, [RED])
    with pytest.raises(MediaError, match="blind has no vision"):
        service.check_images(history.with_turn("user", "see", images=[RED]))  # an earlier message's image
    service.check_images(history)  # nothing to check
    assert (service.histories.root / "Assistant" / f"{history.chat_id}.json").read_bytes() == before
    assert scripted_app.models.model.seen_images == []


def test_a_typed_marker_is_refused_before_the_message_is_saved(scripted_app: Any) -> None:
    service = load(scripted_app, vision=4)
    history = ChatHistory.new("Assistant")
    with pytest.raises(MediaError, match=r"2 image marker\(s\).*for 1 image"):
        next(service.stream_reply(history, f"what is {MEDIA_MARKER}?", ChatOptions(), SETTINGS, images=[RED]))
    assert service.histories.list_chats("Assistant") == [] and scripted_app.models.model.seen_images == []
    *_, plain = service.stream_reply(
        history, f"what is {MEDIA_MARKER}?", ChatOptions(), SETTINGS
    )  # no images
    assert plain.text == "I see"


def test_a_long_chat_drops_its_oldest_images_to_stay_within_the_models_limit(scripted_app: Any) -> None:
    service = load(scripted_app, vision=2, name="two-eyes")
    history = (
        ChatHistory.new("Assistant").with_turn("user", "one", images=[RED, BLUE]).with_turn("assistant", "ok")
    )
    *_, last = service.stream_reply(history, "and this", ChatOptions(), SETTINGS, images=[GREEN])
    assert scripted_app.models.model.seen_images[-1] == [GREEN.sha256] and last.dropped_turns == 2
    assert last.history.turns[0].images == (RED, BLUE)  # dropped from the prompt, never from the chat
    with pytest.raises(MediaError, match="3 images in one message; two-eyes takes at most 2"):
        service.check_images(history, [GREEN, RED, BLUE])
    service.check_images(history, [GREEN, RED])


def test_fitting_counts_what_an_image_really_costs(scripted_app: Any) -> None:
    """Each image takes 150 tokens of a 700-token context (the scripted tokenizer reads a byte per token):
    counted as its marker's text, three turns with images would seem to fit and the core would refuse the
    prompt; counted as 150 each, the oldest exchange drops and the reply comes."""
    write_script(scripted_app.settings.models_dir, "costly", ["I", " see"], n_ctx=700, vision=8, image_cost=150)
    scripted_app.models.load("costly")
    service = ChatService(scripted_app)
    history = ChatHistory.new("Assistant")
    for image in (RED, BLUE):
        history = history.with_turn("user", "look", images=[image]).with_turn("assistant", "ok")
    *_, last = service.stream_reply(history, "and now?", ChatOptions(), SETTINGS, images=[GREEN])
    assert last.text == "I see" and last.dropped_turns == 2
    assert scripted_app.models.model.seen_images[-1] == [BLUE.sha256, GREEN.sha256]


