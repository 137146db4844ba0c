"""Who can reach the web UI, played as an attacker: start-up refuses to listen openly, logins are
required when set, foreign Host and Origin headers get 403, and trust_remote_code is never offered
without --trust-remote-code. Real servers on free local ports, httpx as the client."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from webui.__main__ import main
from webui.access import AccessError, parse_auth_file, plan_access, ui_logins
from webui.app import App
from webui.config import Settings
from webui.host_guard import AllowedHosts, HostGuard, hostname_of, machine_addresses
from webui.server import startup_lines
from webui.ui import build_ui, start_ui_for_tests
from webui.ui.context import default_character_state, default_params
from webui.ui.loader_params import build_loader_panels
from webui.ui.model_tab import REMOTE_CODE_REASON, ModelTab, locked_params
from webui.ui.session_tab import save_ui_settings

pytest_plugins = ["tests.ui_harness"]
PASSWORD = "s3cret:with,odd"
REMOTE_CODE_BOX = "loader-transformers-trust_remote_code"


# -- start-up: refusing to listen openly ----------------------------------------------------------------


def test_listen_without_ui_login_refuses_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--models-dir", str(tmp_path), "--listen"]) == 2
    err = capsys.readouterr().err
    assert "--gradio-auth" in err and "--allow-unauthenticated" in err and "web UI" in err


def test_listen_with_api_but_no_key_refuses(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--models-dir", str(tmp_path), "--listen", "--api", "--gradio-auth", "ann:pw"])
    assert code == 2
    err = capsys.readouterr().err
    assert "the API" in err and "--api-key" in err and "--allow-unauthenticated" in err
    assert "web UI" not in err  # it has a login; only the API is named


def test_allow_unauthenticated_proceeds_with_loud_warnings() -> None:
    plan = plan_access(Settings(listen=True, api=True, allow_unauthenticated=True))
    assert len(plan.warnings) == 2 and all("--allow-unauthenticated" in w for w in plan.warnings)
    assert plan.logins == []


def test_logins_and_keys_or_localhost_need_no_flag() -> None:
    secured = plan_access(Settings(listen=True, api=True, gradio_auth="ann:pw", api_key=["k1", "k2"]))
    assert secured.warnings == [] and secured.logins == [("ann", "pw")]
    assert plan_access(Settings(api=True)).warnings == []  # 127.0.0.1, the default: unchanged
    api_only = Settings(listen=True, api=True, api_key="k", no_browser_ui=True)
    assert plan_access(api_only).warnings == []  # no UI served: no UI login needed


def test_auth_file_lines_and_passwords_with_separators(tmp_path: Path) -> None:
    path = tmp_path / "logins.txt"
    path.write_text(f"# who may log in\nann:{PASSWORD}\n\n  bo : pw2  \n", encoding="utf-8")
    assert parse_auth_file(path) == [("ann", PASSWORD), ("bo", "pw2")]
    settings = Settings(gradio_auth="cy:pw3,", gradio_auth_path=path)
    assert ui_logins(settings) == [("cy", "pw3"), ("ann", PASSWORD), ("bo", "pw2")]
    assert PASSWORD not in repr(plan_access(settings))


def test_malformed_auth_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "logins.txt"
    path.write_text(f"ann:{PASSWORD}\nbo hunter2\n", encoding="utf-8")  # line 2 lacks the ':'
    assert main(["--models-dir", str(tmp_path), "--gradio-auth-path", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"--gradio-auth-path {path} line 2" in err and "USER:PASSWORD" in err
    assert "hunter2" not in err and PASSWORD not in err  # the offending line is never echoed


@pytest.mark.parametrize("value", ["ann", "ann:", ":pw", "ann:pw,bo"])
def test_malformed_auth_option(value: str) -> None:
    with pytest.raises(AccessError, match="--gradio-auth entry"):
        ui_logins(Settings(gradio_auth=value))


def test_missing_or_empty_auth_file(tmp_path: Path) -> None:
    with pytest.raises(AccessError, match="cannot read --gradio-auth-path"):
        ui_logins(Settings(gradio_auth_path=tmp_path / "nope.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody yet\n")
    with pytest.raises(AccessError, match="holds no USER:PASSWORD"):
        ui_logins(Settings(gradio_auth_path=empty))


def test_listen_startup_lines_show_real_addresses() -> None:
    lines = startup_lines("Hearth web UI", "0.0.0.0", 7860)
    assert "0.0.0.0:7860" in lines[0]
    assert "  http://localhost:7860" in lines
    own = socket.gethostbyname(socket.gethostname())
    for address in machine_addresses():
        assert any(address in line for line in lines) != (":" in address)  # 0.0.0.0 is IPv4 only
    if not own.startswith("127."):
        assert f"  http://{own}:7860" in lines
    assert startup_lines("Hearth web UI", "127.0.0.1", 7860) == ["Hearth web UI: http://127.0.0.1:7860"]


# -- the host guard ---------------------------------------------------------------------------------------


def test_allowed_hosts() -> None:
    local = AllowedHosts.for_server("127.0.0.1", ["My.Lan"])
    assert local.allows("127.0.0.1:7860") and local.allows("localhost") and local.allows("[::1]:7860")
    assert local.allows("my.lan:7860")
    assert not local.allows("evil.example") and not local.allows(None) and not local.allows("[::1")
    assert not local.allows(socket.gethostname())  # only with --listen
    everywhere = AllowedHosts.for_server("0.0.0.0")
    assert everywhere.allows(socket.gethostname())
    assert all(everywhere.allows(f"[{a}]:7860" if ":" in a else f"{a}:7860") for a in machine_addresses())
    assert AllowedHosts.for_server("127.0.0.1", ["fd00::5"]).allows("[fd00::5]:7860")
    assert AllowedHosts.for_server("127.0.0.1", ["*"]).allows("anything.example")
    assert hostname_of("http://[::1]:80") == "::1" and hostname_of("Evil.Example:1") == "evil.example"


def test_origin_rules() -> None:
    guard = HostGuard(
        None, AllowedHosts.for_server("127.0.0.1", ["my.lan"]), extra_origins=["https://st.app"]
    )
    assert guard.origin_allowed("http://127.0.0.1:7860", "127.0.0.1:7860")
    assert guard.origin_allowed("https://my.lan", "127.0.0.1:7860")  # behind a proxy named my.lan
    assert guard.origin_allowed("https://st.app/", "127.0.0.1:5000")
    for foreign in ("http://evil.example", "null", "file://", "http://127.0.0.1.evil.example:7860"):
        assert not guard.origin_allowed(foreign, "127.0.0.1:7860"), foreign


def test_guard_wraps_any_asgi_app() -> None:
    """The API can reuse it: plain routes and WebSocket handshakes are judged alike."""

    async def hello(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    routes = [Route("/", lambda request: PlainTextResponse("ok")), WebSocketRoute("/ws", hello)]
    hosts = AllowedHosts.for_server("127.0.0.1", ["testserver"])
    app = Starlette(routes=routes, middleware=[Middleware(HostGuard, hosts=hosts)])
    with TestClient(app) as client:
        assert client.get("/").text == "ok"
        assert client.get("/", headers={"Host": "evil.example"}).status_code == 403
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "hi"
        with (
            pytest.raises(WebSocketDisconnect),
            client.websocket_connect("/ws", headers={"Origin": "http://evil.example"}),
        ):
            pass


# -- a running UI ------------------------------------------------------------------------------------------


@pytest.fixture
def guarded_ui(ui_settings: Settings, tmp_path: Path) -> Iterator[tuple[App, str]]:
    """The real UI with a login from a file and one extra allowed host name."""
    logins = tmp_path / "logins.txt"
    logins.write_text(f"ann:{PASSWORD}\n", encoding="utf-8")
    settings = dataclasses.replace(ui_settings, gradio_auth_path=logins, allowed_hosts=["hearth.lan"])
    app = App.create(settings)
    url, close = start_ui_for_tests(app)
    try:
        yield app, url.rstrip("/")
    finally:
        close()
        app.core.stop_all()
        app.models.unload()


def test_login_required_when_auth_is_set(guarded_ui: tuple[App, str]) -> None:
    _, url = guarded_ui
    with httpx.Client(base_url=url, timeout=30) as client:
        for path in ("/config", "/gradio_api/info"):
            assert client.get(path).status_code == 401
        join = {"data": [], "fn_index": 0, "session_hash": "x"}
        assert client.post("/gradio_api/queue/join", json=join).status_code == 401
        wrong = client.post("/login", data={"username": "ann", "password": "nope"})
        assert wrong.status_code == 400
        assert client.post("/login", data={"username": "ann", "password": PASSWORD}).status_code == 200
        assert client.get("/config").status_code == 200


def test_foreign_host_and_origin_are_refused(guarded_ui: tuple[App, str]) -> None:
    _, url = guarded_ui
    port = url.rsplit(":", 1)[1]
    with httpx.Client(base_url=url, timeout=30) as client:
        rebound = client.get("/", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 403 and "--allowed-hosts" in rebound.text
        assert client.get("/", headers={"Host": f"hearth.lan:{port}"}).status_code == 200
        login = {"username": "ann", "password": PASSWORD}
        cross = client.post("/login", data=login, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403 and not client.cookies  # no session for a cross-site form
        same = client.post("/login", data=login, headers={"Origin": url})
        assert same.status_code == 200
        join = {"data": [], "fn_index": 0, "session_hash": "x"}
        foreign = client.post("/gradio_api/queue/join", json=join, headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403


def test_local_ui_without_flags_needs_no_login(ui_server: Any) -> None:
    with httpx.Client(base_url=ui_server.url, timeout=30) as client:
        assert client.get("/config").status_code == 200
        assert client.get("/", headers={"Host": "evil.example"}).status_code == 403


# -- remote code only by intent ----------------------------------------------------------------------------


def _component(blocks: gr.Blocks, elem_id: str) -> Any:
    return next(c for c in blocks.blocks.values() if getattr(c, "elem_id", None) == elem_id)


def test_remote_code_box_is_disabled_without_the_flag(ui_app: App) -> None:
    box = _component(build_ui(ui_app), REMOTE_CODE_BOX)
    assert box.interactive is False and box.value is False
    assert REMOTE_CODE_REASON in box.info


def test_remote_code_box_is_offered_with_the_flag(ui_settings: Settings) -> None:
    settings = dataclasses.replace(ui_settings, loader_args={"trust_remote_code": True})
    assert locked_params(settings) == {}
    app = App.create(settings)
    try:
        box = _component(build_ui(app), REMOTE_CODE_BOX)
    finally:
        app.core.stop_all()
    assert box.interactive is not False and REMOTE_CODE_REASON not in (box.info or "")


def test_a_forged_tick_is_refused_with_a_toast(ui_app: App) -> None:
    """A Gradio API call can send any value, disabled box or not: the tab refuses before loading."""
    with gr.Blocks():
        panels = build_loader_panels(ui_app.loaders, "Transformers", None, locked_params(ui_app.settings))
    tab = ModelTab(ui_app, panels)
    values = [w.value for w in panels.inputs]
    index = next(i for i, w in enumerate(panels.inputs) if w.elem_id == REMOTE_CODE_BOX)
    values[index] = True
    for action in (tab.load, tab.save):
        with pytest.raises(gr.Error, match="trust-remote-code"):
            action("tiny-llama", "Transformers", *values)
    assert ui_app.models.model is None
    saved = panels.fill("Transformers", {"trust_remote_code": True})[index]
    assert "value" not in saved  # a saved tick never fills the disabled box


def test_secrets_and_risks_are_never_saved(ui_app: App) -> None:
    settings = ui_app.settings
    settings.gradio_auth, settings.allow_unauthenticated, settings.listen = f"ann:{PASSWORD}", True, True
    settings.loader_args = {"trust_remote_code": True, "n_ctx": 1024}
    path = save_ui_settings(ui_app, default_params(ui_app), default_character_state(ui_app), "light")
    text = path.read_text()
    assert PASSWORD not in text and "gradio_auth" not in text and "allow_unauthenticated" not in text
    assert "listen" not in text and "loader_args" not in text and "trust_remote_code" not in text


# -- in the browser ---------------------------------------------------------------------------------------


@pytest.mark.browser
def test_login_page_in_the_browser(browser: Any, guarded_ui: tuple[App, str]) -> None:
    _, url = guarded_ui
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(90_000)
    try:
        page.goto(url)
        page.get_by_label("username").fill("ann")
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("button[role='tab']")
    finally:
        context.close()
