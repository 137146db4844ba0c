"""The Remote loader against real servers nobody here wrote (llama-cpp-python's OpenAI server) and a second
Hearth with --api, on the tiny GGUF; a small fake only for the failures real servers cannot be made to
produce on demand (a stall, garbage bodies, a broken event stream)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.remote_servers import FakeServer, free_port, hearth_server, llama_cpp_server
from webui.errors import GenerationError, LoaderError, ModelNotFound, ModelRuntimeError
from webui.events import Finished, TextChunk
from webui.generation import GenerationCore, GenerationRequest
from webui.models import ModelManager
from webui.remotes import RemoteRegistry
from webui.sampling import SamplingParams

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")

GGUF = "tiny-llama.gguf"
KEY = "hearth-test-key"
GREEDY = SamplingParams(temperature=0)
PROMPT = "hello world, the quick brown fox"


@pytest.fixture(scope="module")
def lcp_url(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_cpp_server(models_dir / GGUF, tmp_path_factory.mktemp("lcp") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def hearth_url(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("hearth2")
    with hearth_server(models_dir, GGUF, root / "user_data", root / "server.log", KEY) as url:
        yield url


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def remotes_file(tmp_path: Path) -> Path:
    return tmp_path / "user_data" / "remotes.yaml"


def write_remotes(path: Path, **servers: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"remotes": servers}))


@pytest.fixture
def remote_manager(models_dir: Path, loaders: dict, remotes_file: Path) -> Iterator[ModelManager]:
    manager = ModelManager(models_dir, loaders, remotes=RemoteRegistry(remotes_file))
    yield manager
    manager.unload()


def lcp_entry(url: str) -> dict:
    return {"url": url, "kind": "llama-cpp-python"}


def hearth_entry(url: str) -> dict:
    return {"url": f"{url}/v1", "kind": "hearth", "api_key_env": "HEARTH_TEST_REMOTE_KEY", "model": GGUF}


def greedy_run(core: GenerationCore, n: int = 24, **extra) -> tuple[Finished, list[TextChunk]]:
    chunks, final = [], None
    for event in core.stream(GenerationRequest(prompt=PROMPT, max_new_tokens=n, sampling=GREEDY, **extra)):
        if isinstance(event, TextChunk):
            chunks.append(event)
        elif isinstance(event, Finished):
            final = event
    assert final is not None
    return final, chunks


@pytest.fixture(scope="module")
def local_greedy(models_dir: Path, loaders: dict) -> Finished:
    """The same GGUF loaded here with the llama.cpp loader: the reference output."""
    manager = ModelManager(models_dir, loaders)
    manager.load(GGUF, "llama.cpp", {"n_ctx": 512})
    try:
        return greedy_run(GenerationCore(manager))[0]
    finally:
        manager.unload()


def remote_name(manager: ModelManager, server: str) -> str:
    names = [m.name for m in manager.list_models() if m.name.startswith(f"remote:{server}/")]
    assert len(names) == 1, names
    return names[0]


@pytest.fixture
def hearth_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_TEST_REMOTE_KEY", KEY)


# -- listing and resolving ------------------------------------------------------------------------------
def test_remotes_listed_beside_local_models_and_resolved_safely(
    remote_manager, remotes_file, lcp_url, models_dir
):
    write_remotes(
        remotes_file,
        lcp=lcp_entry(lcp_url),
        pinned={"url": lcp_url, "kind": "llama-cpp-python", "model": "chosen"},
    )
    names = [m.name for m in remote_manager.list_models()]
    assert GGUF in names  # local models are still there
    assert f"remote:lcp/{models_dir / GGUF}" in names  # from the server's GET /v1/models
    assert "remote:pinned/chosen" in names
    assert remote_manager.resolve("remote:pinned/chosen").size_bytes == 0
    with pytest.raises(ModelNotFound, match="no remote server named 'elsewhere'"):
        remote_manager.resolve("remote:elsewhere/x")
    with pytest.raises(ModelNotFound, match="configured for model 'chosen' only"):
        remote_manager.resolve("remote:pinned/other")
    with pytest.raises(ModelNotFound):
        remote_manager.resolve("remote:lcp")  # no '/': not a remote name, and not a file either


# -- real servers: greedy equality, streaming, stop strings ---------------------------------------------
def test_llama_cpp_python_server_greedy_equals_local(remote_manager, remotes_file, lcp_url, local_greedy):
    write_remotes(remotes_file, lcp=lcp_entry(lcp_url))
    remote_manager.load(remote_name(remote_manager, "lcp"))
    final, chunks = greedy_run(GenerationCore(remote_manager))
    assert final.usage.completion_tokens == local_greedy.usage.completion_tokens == 24
    assert final.usage.prompt_tokens == local_greedy.usage.prompt_tokens
    # llama-cpp-python's server drops the bytes of an unfinished UTF-8 character, Hearth shows U+FFFD
    assert final.text == local_greedy.text.replace("\ufffd", "")
    assert len(chunks) > 3  # streamed, not one block
    assert final.reason == "length"


def test_second_hearth_greedy_equals_local_token_for_token(
    remote_manager, remotes_file, hearth_url, hearth_key, local_greedy
):
    write_remotes(remotes_file, h=hearth_entry(hearth_url))
    model = remote_manager.load(f"remote:h/{GGUF}")
    assert model.n_ctx == 4096  # read from the remote's /v1/internal/model/info
    final, chunks = greedy_run(GenerationCore(remote_manager))
    assert final.text == local_greedy.text
    assert final.usage.completion_tokens == local_greedy.usage.completion_tokens
    assert final.usage.prompt_tokens == local_greedy.usage.prompt_tokens
    assert len(chunks) > 3
    # the server's tokenizer: token counts and the chat's counter work as locally
    assert model.tokenize(PROMPT) == remote_manager.model.tokenize(PROMPT)
    assert model.detokenize(model.tokenize(PROMPT, add_bos=False)) == PROMPT


@pytest.mark.parametrize("server", ["lcp", "h"])
def test_stop_string_never_leaks(
    server, remote_manager, remotes_file, lcp_url, hearth_url, hearth_key, local_greedy
):
    write_remotes(remotes_file, lcp=lcp_entry(lcp_url), h=hearth_entry(hearth_url))
    remote_manager.load(remote_name(remote_manager, server))
    text = local_greedy.text
    at = next(
        i
        for i in range(len(text) // 2, len(text))
        if text[i : i + 2].isprintable() and "\ufffd" not in text[i : i + 2]
    )
    stop = text[at : at + 2]
    final, chunks = greedy_run(GenerationCore(remote_manager), stop=[stop])
    assert final.reason == "stop"
    assert stop not in final.text and stop not in "".join(c.text for c in chunks)
    expected = text[: text.index(stop)]
    assert final.text.replace("\ufffd", "") == expected.replace("\ufffd", "")


def test_unsupported_sampler_is_an_error_naming_it(remote_manager, remotes_file, lcp_url):
    write_remotes(remotes_file, lcp=lcp_entry(lcp_url))
    remote_manager.load(remote_name(remote_manager, "lcp"))
    core = GenerationCore(remote_manager)
    sampling = SamplingParams(temperature=0.7, dry_multiplier=0.8, xtc_probability=0.5)
    with pytest.raises(GenerationError, match="dry_multiplier, xtc_probability .*llama-cpp-python"):
        core.generate(GenerationRequest(prompt=PROMPT, max_new_tokens=4, sampling=sampling))
    with pytest.raises(GenerationError, match="guidance_scale"):
        core.generate(
            GenerationRequest(prompt=PROMPT, max_new_tokens=4, sampling=SamplingParams(guidance_scale=1.5))
        )
    # samplers the kind takes go through (min_p, top_k: llama-cpp-python's names)
    ok = core.generate(
        GenerationRequest(
            prompt=PROMPT,
            max_new_tokens=4,
            sampling=SamplingParams(temperature=0.7, min_p=0.1, top_k=20, seed=5),
        )
    )
    assert ok.usage.completion_tokens == 4


def test_logprobs_are_the_remotes_top_logprobs(remote_manager, remotes_file, lcp_url):
    write_remotes(remotes_file, lcp=lcp_entry(lcp_url))
    remote_manager.load(remote_name(remote_manager, "lcp"))
    final, chunks = greedy_run(GenerationCore(remote_manager), n=6, logprobs=2)
    entries = [entry for chunk in chunks for entry in chunk.logprobs]
    assert len(entries) == final.usage.completion_tokens == 6
    assert all(
        e.token_id == -1 and e.logprob is not None and 1 <= len(e.top) <= 2 for e in entries
    )  # no ids: remote's


@pytest.fixture(scope="module")
def local_top(models_dir: Path, loaders: dict) -> list:
    """The next-token top 5 of the same GGUF loaded here (f32 KV cache, as the reference)."""
    manager = ModelManager(models_dir, loaders)
    manager.load(GGUF, "llama.cpp", {"n_ctx": 512})
    try:
        return GenerationCore(manager).top_tokens(PROMPT, 5)
    finally:
        manager.unload()


def test_logits_view_reads_the_servers_top_logprobs(remote_manager, remotes_file, lcp_url, local_top):
    write_remotes(remotes_file, lcp=lcp_entry(lcp_url))
    remote_manager.load(remote_name(remote_manager, "lcp"))
    core = GenerationCore(remote_manager)
    top = core.top_tokens(PROMPT, 5)
    assert all(t.token_id == -1 for t in top)  # the server's numbers: no ids
    # the server keys its logprobs by text, so byte tokens (shown locally as U+FFFD) merge into one '' entry;
    # every whole-text token it reports is one of ours with the same logprob
    local = {t.text: t.logprob for t in local_top if "\ufffd" not in t.text}
    words = [t for t in top if t.text]
    assert words and all(t.text in local and t.logprob == pytest.approx(local[t.text], abs=1e-2) for t in words)
    with pytest.raises(GenerationError, match="after Hearth's samplers"):
        core.top_tokens(PROMPT, 5, use_samplers=True)


def test_logits_view_on_another_hearth_is_exact(remote_manager, remotes_file, hearth_url, hearth_key, local_top):
    write_remotes(remotes_file, h=hearth_entry(hearth_url))
    remote_manager.load(f"remote:h/{GGUF}")
    top = GenerationCore(remote_manager).top_tokens(PROMPT, 5)
    assert [(t.token_id, t.text) for t in top] == [(t.token_id, t.text) for t in local_top]
    assert [t.logprob for t in top] == pytest.approx([t.logprob for t in local_top], abs=1e-3)
    after = GenerationCore(remote_manager).top_tokens(PROMPT, 5, use_samplers=True, sampling=SamplingParams(top_k=2))
    assert len([t for t in after if t.logprob > float("-inf")]) == 2  # the remote Hearth applied top_k


@pytest.mark.slow
def test_cancel_closes_the_stream_and_the_remote_stops(remote_manager, remotes_file, hearth_url, hearth_key):
    """A 3500-token generation, cancelled at its first chunk: the remote Hearth serves the next request at
    once (it would otherwise be busy for many seconds)."""
    write_remotes(remotes_file, h=hearth_entry(hearth_url))
    remote_manager.load(f"remote:h/{GGUF}")
    core = GenerationCore(remote_manager)
    cancel = threading.Event()
    events = []
    for event in core.stream(GenerationRequest(prompt=PROMPT, max_new_tokens=3500, sampling=GREEDY), cancel):
        events.append(event)
        if len(events) == 1:
            cancel.set()
    assert events[-1].reason == "cancelled"
    start = time.perf_counter()
    after = core.generate(GenerationRequest(prompt=PROMPT, max_new_tokens=1, sampling=GREEDY))
    assert after.usage.completion_tokens == 1
    assert time.perf_counter() - start < 3.0


# -- failures -------------------------------------------------------------------------------------------
def test_dead_server_is_a_clear_error_and_still_listed(remote_manager, remotes_file):
    write_remotes(remotes_file, dead={"url": f"http://127.0.0.1:{free_port()}", "kind": "llama-server"})
    assert "remote:dead/" in [m.name for m in remote_manager.list_models()]
    with pytest.raises(LoaderError, match=r"cannot reach the remote server dead \(http://127.0.0.1:\d+\)"):
        remote_manager.load("remote:dead/")
    assert remote_manager.model is None


def test_wrong_key_is_named(remote_manager, remotes_file, hearth_url, monkeypatch):
    monkeypatch.setenv("HEARTH_TEST_REMOTE_KEY", "not-the-key")
    write_remotes(remotes_file, h=hearth_entry(hearth_url))
    with pytest.raises(LoaderError, match=r"remote server h .* refused the API key \(HTTP 401\)"):
        remote_manager.load(f"remote:h/{GGUF}")
    # the key typed in the Model tab wins over the variable
    remote_manager.load(f"remote:h/{GGUF}", params={"remote_api_key": KEY})
    assert remote_manager.model_name == f"remote:h/{GGUF}"


def test_slow_server_times_out_and_cancel_is_prompt(remote_manager, remotes_file, fake):
    write_remotes(remotes_file, slow={"url": fake.url, "kind": "openai", "timeout": 1, "model": "fake-model"})
    fake.mode = "stall_models"
    with pytest.raises(LoaderError, match=r"remote server slow .* did not answer within 1 s"):
        remote_manager.load("remote:slow/fake-model")
    write_remotes(
        remotes_file, slow={"url": fake.url, "kind": "openai", "timeout": 30, "model": "fake-model"}
    )
    fake.mode = "ok"
    remote_manager.load("remote:slow/fake-model")
    fake.mode = "stall_stream"
    core = GenerationCore(remote_manager)
    cancel = threading.Event()
    seen = []
    start = time.perf_counter()
    for event in core.stream(GenerationRequest(prompt="hi", max_new_tokens=50), cancel):
        seen.append(event)
        if isinstance(event, TextChunk) and event.text:
            cancel.set()  # the server now says nothing at all: cancelling must still end it at once
    assert seen[-1].reason == "cancelled"
    assert time.perf_counter() - start < 5


def test_stalled_stream_times_out(remote_manager, remotes_file, fake):
    write_remotes(remotes_file, slow={"url": fake.url, "kind": "openai", "timeout": 1, "model": "fake-model"})
    remote_manager.load("remote:slow/fake-model")
    fake.mode = "stall_stream"
    with pytest.raises(ModelRuntimeError, match="did not answer within 1 s"):
        GenerationCore(remote_manager).generate(GenerationRequest(prompt="hi", max_new_tokens=5))


def test_garbage_answers_are_named(remote_manager, remotes_file, fake):
    write_remotes(remotes_file, junk={"url": fake.url, "kind": "openai", "model": "fake-model"})
    fake.mode = "garbage"
    with pytest.raises(LoaderError, match=r"remote server junk .* not JSON: '<html>gateway"):
        remote_manager.load("remote:junk/fake-model")
    fake.mode = "ok"
    remote_manager.load("remote:junk/fake-model")
    core = GenerationCore(remote_manager)
    assert core.generate(GenerationRequest(prompt="hi", max_new_tokens=5)).text == "Hello there"
    fake.mode = "bad_sse"
    with pytest.raises(ModelRuntimeError, match="stream event that is not JSON"):
        core.generate(GenerationRequest(prompt="hi", max_new_tokens=5))
    fake.mode = "ok"  # and the model still works afterwards
    assert core.generate(GenerationRequest(prompt="hi", max_new_tokens=5)).text == "Hello there"


def test_openai_kind_without_tokenizer_says_so(remote_manager, remotes_file, fake):
    write_remotes(remotes_file, plain={"url": fake.url, "kind": "openai", "model": "fake-model"})
    model = remote_manager.load("remote:plain/fake-model")
    with pytest.raises(GenerationError, match="no tokenizer endpoint: token counts"):
        model.tokenize("hi")
    with pytest.raises(GenerationError, match="prompt_ids: .* send the prompt as text"):
        GenerationCore(remote_manager).generate(GenerationRequest(prompt_ids=[1, 2], max_new_tokens=2))
