"""Images through /v1/chat/completions (issue 18): OpenAI image_url content parts, through the official
`openai` client and raw HTTP, reach a scripted vision model (tests/scripted_loader.py); every bad image is
a 400 naming the part; a model without vision is a 400 naming it and the fix; http(s) image URLs are
refused unless the server was started with --allow-image-urls, and then fetched (from a local server here)
within a size cap and a time limit, never redirected off http(s)."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image as PILImage

from tests import scripted_loader
from tests.scripted_loader import write_script
from tests.test_api_server import API_KEY, Served, assert_error, serve_api
from webui import media_urls
from webui.media import Image
from webui.plugins import make_plugin_manager

GREEDY = {"temperature": 0}


def png(color: tuple[int, int, int], size: tuple[int, int] = (16, 12)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


RED, BLUE = png((255, 0, 0)), png((0, 0, 255))
NOISE = png((1, 2, 3), (64, 64))  # larger than the small cap set below
SHA = {
    name: Image.from_bytes(data).sha256 for name, data in {"red": RED, "blue": BLUE, "noise": NOISE}.items()
}


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def ask(*parts: dict[str, Any], text: str = "What is this?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]


@contextmanager
def serve_scripted(root: Path, **settings: Any) -> Iterator[Served]:
    """The API over scripted models: "seer" (takes 2 images, loaded) and "blind" (no vision)."""
    plugins = make_plugin_manager(load_entry_points=False)
    plugins.register(scripted_loader, name="tests.scripted_loader")
    models = root / "models"
    write_script(models, "seer", ["I", " see"], n_ctx=4096, vision=2)
    write_script(models, "blind", ["No", "."], n_ctx=4096)
    with serve_api(models, root / "user", model="seer", plugins=plugins, api_key=API_KEY, **settings) as served:
        yield served


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_scripted(tmp_path_factory.mktemp("vision-api")) as s:
        yield s


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base}/v1", api_key=API_KEY, max_retries=0)


def seen(served: Served) -> list[list[str]]:
    return served.app.models.model.seen_images  # type: ignore[union-attr]


# -- data URLs ----------------------------------------------------------------------------------------
def test_a_data_url_image_reaches_the_model_streamed_or_not(served: Served, client: openai.OpenAI):
    whole = client.chat.completions.create(
        model="",
        messages=ask(image_part(data_url(RED))),  # type: ignore[arg-type]
        max_tokens=4,
        extra_body=GREEDY,
    )
    assert whole.choices[0].message.content == "I see" and seen(served)[-1] == [SHA["red"]]
    chunks = list(
        client.chat.completions.create(
            model="",
            messages=ask(image_part(data_url(BLUE))),  # type: ignore[arg-type]
            max_tokens=4,
            stream=True,
            extra_body=GREEDY,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "I see"
    assert seen(served)[-1] == [SHA["blue"]]


def test_sillytavern_and_plain_string_shapes(served: Served):
    """SillyTavern sends `detail` and, with inline images on, a character's pictures on its own messages;
    some clients send image_url as a plain string."""
    messages = [
        {"role": "system", "content": "You are a painter."},
        {"role": "user", "content": [{"type": "text", "text": "Paint red."}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Here."}, image_part(data_url(RED), detail="auto")],
        },
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": data_url(BLUE)},
                {"type": "text", "text": "Now this?"},
            ],
        },
    ]
    with served.client() as c:
        response = c.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 4, **GREEDY})
        assert response.status_code == 200, response.text
        assert seen(served)[-1] == [SHA["red"], SHA["blue"]]  # in conversation order
        prompt = c.post("/v1/internal/chat-prompt", json={"messages": messages}).json()["prompt"]
    assert prompt.count("<__media__>") == 2 and "<__media__>\nNow this?" in prompt


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (data_url(RED)[:-9], "malformed or truncated"),
        (data_url(b"just some text, not a picture", "text/plain"), "not an image"),
        ("data:image/png,rawbytes", "not a base64 data URL"),
        ("file:///etc/passwd", "file: URL is not accepted"),
    ],
)
def test_bad_images_are_a_400_naming_the_part(served: Served, url: str, says: str):
    before = len(seen(served))
    with served.client() as c:
        error = assert_error(
            c.post("/v1/chat/completions", json={"messages": ask(image_part(url)), "max_tokens": 2}),
            400,
            param="messages[0].content[1]",
        )
    assert error["type"] == "invalid_request_error" and says in error["message"]
    assert len(seen(served)) == before


def test_a_50_megapixel_image_is_refused_unread(served: Served):
    buffer = io.BytesIO()
    PILImage.new("1", (8000, 6250)).save(buffer, "PNG")  # 50 MP, a few KB
    with served.client() as c:
        error = assert_error(
            c.post(
                "/v1/chat/completions",
                json={"messages": ask(image_part(data_url(buffer.getvalue()))), "max_tokens": 2},
            ),
            400,
            param="messages[0].content[1]",
        )
    assert "8000 x 6250 (50 megapixels)" in error["message"] and "scale it down" in error["message"]


def test_misplaced_or_missing_image_fields(served: Served):
    system_image = [{"role": "system", "content": [image_part(data_url(RED))]}, *ask()]
    with served.client() as c:
        error = assert_error(
            c.post("/v1/chat/completions", json={"messages": system_image}),
            400,
            param="messages[0].content[0]",
        )
        assert "not in a system message" in error["message"]
        no_url = ask({"type": "image_url"})
        error = assert_error(
            c.post("/v1/chat/completions", json={"messages": no_url}), 400, param="messages[0].content[1]"
        )
        assert 'needs image_url: {"url": "data:image/png;base64,...' in error["message"]
        too_many = ask(*(image_part(data_url(x)) for x in (RED, BLUE, NOISE)))
        error = assert_error(
            c.post("/v1/chat/completions", json={"messages": too_many, "max_tokens": 2}), 400
        )
        assert "3 images in one message" in error["message"] and "seer takes at most 2" in error["message"]


def test_a_model_without_vision_is_a_400_naming_it(served: Served, client: openai.OpenAI):
    served.app.models.load("blind")
    try:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as info:
                client.chat.completions.create(
                    model="",
                    messages=ask(image_part(data_url(RED))),  # type: ignore[arg-type]
                    max_tokens=2,
                    stream=stream,
                )
            message = info.value.body["message"]  # type: ignore[index]
            assert "blind has no vision" in message and "load a vision model" in message
        text_only = client.chat.completions.create(model="", messages=ask(), max_tokens=2, extra_body=GREEDY)  # type: ignore[arg-type]
        assert text_only.choices[0].message.content == "No."
    finally:
        served.app.models.load("seer")


# -- http(s) URLs -------------------------------------------------------------------------------------
class _Pictures(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {
        "/red.png": (200, {"Content-Type": "image/png"}, RED),
        "/noise.png": (200, {"Content-Type": "image/png"}, NOISE),
        "/moved": (302, {"Location": "/red.png"}, b""),
        "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
        "/gone.png": (404, {}, b"not here"),
    }

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/slow.png":
            time.sleep(3)
        status, headers, body = self.routes.get(self.path, (200, {"Content-Type": "image/png"}, RED))
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pictures() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pictures)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_urls_are_refused_without_the_flag(served: Served, pictures: str):
    with served.client() as c:
        error = assert_error(
            c.post("/v1/chat/completions", json={"messages": ask(image_part(f"{pictures}/red.png"))}),
            400,
            param="messages[0].content[1]",
        )
    assert "--allow-image-urls" in error["message"] and "data: URL" in error["message"]


def test_urls_are_fetched_with_the_flag_within_limits(
    tmp_path: Path, pictures: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(media_urls, "MAX_IMAGE_BYTES", len(NOISE) - 1)
    monkeypatch.setattr(media_urls, "FETCH_TIMEOUT_S", 0.5)
    with serve_scripted(tmp_path, allow_image_urls=True) as s, s.client() as c:

        def post(path: str) -> Any:
            return c.post(
                "/v1/chat/completions", json={"messages": ask(image_part(pictures + path)), "max_tokens": 2}
            )

        assert post("/red.png").status_code == 200 and seen(s)[-1] == [SHA["red"]]
        assert post("/moved").status_code == 200 and len(seen(s)) == 2  # an http redirect is followed
        for path, says in [
            ("/to-file", "only http(s) addresses are fetched"),
            ("/gone.png", "answered HTTP 404"),
            ("/noise.png", f"larger than {len(NOISE) - 1} bytes"),
            ("/slow.png", "longer than 0.5 s"),
        ]:
            started = time.monotonic()
            error = assert_error(post(path), 400, param="messages[0].content[1]")
            assert says in error["message"] and pictures in error["message"], error["message"]
            assert time.monotonic() - started < 2.5  # the slow server is given up on, not waited for
        assert len(seen(s)) == 2
