"""The model pool (webui/model_pool.py): several models in memory, routed by name, evicted by budget and count,
freed when idle; on the scripted loader registered through the real plugin hook (the engine is beside the point)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.scripted_loader import ScriptedLoader, write_script
from webui.app import App
from webui.config import ConfigError, Settings, parse_settings
from webui.errors import HearthError, ModelNotFound, NoModelLoaded
from webui.generation import GenerationRequest
from webui.memory_estimate import GiB, MemoryEstimate
from webui.model_pool import ModelLoadFailed, NotEnoughMemory, parse_budget
from webui.sampling import SamplingParams

GREEDY = SamplingParams(do_sample=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_app(tmp_path: Path, plugins, clock: Clock | None = None, ram_gib: float = 0.0, **settings) -> App:
    app = App.create(
        Settings(models_dir=tmp_path / "models", user_data_dir=tmp_path / "user", **settings), plugins=plugins
    )
    app.settings.user_data_dir.mkdir(parents=True, exist_ok=True)
    for name, word in (("alpha", "Alpha"), ("beta", "Beta"), ("gamma", "Gamma")):
        write_script(app.settings.models_dir, name, [word, "!"])
    if clock is not None:
        app.pool.clock = clock
    if ram_gib:  # every model "needs" this much RAM
        size = int(ram_gib * GiB)
        app.pool.estimator = lambda local, loader, params: MemoryEstimate(0, size, 0, 0, 0, size)
    return app


@pytest.fixture
def pool_app(tmp_path: Path, scripted_plugins):
    app = make_app(tmp_path, scripted_plugins, Clock())
    yield app
    app.close()
    app.models.unload()


def reply(slot, prompt: str = "Say:") -> str:
    return slot.core.generate(GenerationRequest(prompt=prompt, max_new_tokens=4, sampling=GREEDY)).text


def use(pool, name: str):
    """Route `name`, load it when needed, and hand the lease back (the model stays loaded, idle)."""
    slot = pool.acquire(pool.target(name))
    pool.release(slot)
    return slot


def test_a_named_model_loads_beside_the_ui_one_and_answers_itself(pool_app: App):
    pool_app.models.load("alpha")
    beta = use(pool_app.pool, "beta")
    assert reply(beta) == "Beta!" and beta.core is not pool_app.core
    assert (
        pool_app.models.model_name == "alpha"
        and pool_app.core.generate(GenerationRequest(prompt="Say:", max_new_tokens=4, sampling=GREEDY)).text
        == "Alpha!"
    )
    assert use(pool_app.pool, "beta") is beta  # loaded once, reused
    assert [(r["name"], r["ui"]) for r in pool_app.pool.snapshot()] == [("alpha", True), ("beta", False)]


def test_empty_null_the_ui_name_and_aliases(pool_app: App):
    pool = pool_app.pool
    pool_app.models.load("alpha")
    (pool_app.settings.user_data_dir / "model_aliases.yaml").write_text(
        "fast: beta\ngpt-3.5-turbo: ''\nmine: alpha\n", encoding="utf-8"
    )
    assert [pool.target(n) for n in (None, "", "alpha", "gpt-3.5-turbo", "mine")] == [""] * 5
    assert pool.target("fast") == "beta"
    with pytest.raises(ModelNotFound) as err:
        pool.target("gpt-4")
    assert "'gpt-4'" in str(err.value) and "alpha, beta, gamma" in str(err.value) and "fast" in str(err.value)
    assert reply(use(pool, "fast")) == "Beta!"
    aliases = pool_app.settings.user_data_dir / "model_aliases.yaml"
    aliases.write_text("fast: gamma\n", encoding="utf-8")
    os.utime(aliases, ns=(aliases.stat().st_atime_ns, aliases.stat().st_mtime_ns + 10**9))  # a later edit
    assert pool.target("fast") == "gamma"  # re-read when it changes
    aliases.write_text("- a list\n", encoding="utf-8")
    os.utime(aliases, ns=(aliases.stat().st_atime_ns, aliases.stat().st_mtime_ns + 2 * 10**9))
    with pytest.raises(HearthError, match="model_aliases.yaml must map alias names to model names"):
        pool.target("fast")
    aliases.unlink()
    assert pool.aliases() == {}


def test_max_models_evicts_the_least_recently_used_idle_model(tmp_path: Path, scripted_plugins):
    clock = Clock()
    app = make_app(tmp_path, scripted_plugins, clock, max_models=2)
    try:
        app.models.load("alpha")
        clock.now += 10
        beta = use(app.pool, "beta")
        clock.now += 10
        busy = app.pool.acquire("beta")  # a request about to start on beta: it is not idle
        use(app.pool, "gamma")  # alpha (the UI's, older and idle) goes
        assert app.models.model is None and "alpha was unloaded to make room for gamma" in app.pool.ui_note
        assert sorted(app.pool.loaded_names()) == ["beta", "gamma"] and beta.loaded
        gamma = app.pool.acquire("gamma")
        with pytest.raises(
            NotEnoughMemory, match="cannot load model alpha: 2 models are loaded and --max-models is 2"
        ):
            use(app.pool, "alpha")
        app.pool.release(busy)
        app.pool.release(gamma)
        clock.now += 10
        app.pool.release(app.pool.acquire("gamma"))  # gamma used last: beta is the one to go
        use(app.pool, "alpha")
        assert sorted(app.pool.loaded_names()) == ["alpha", "gamma"] and not beta.loaded
        with pytest.raises(NoModelLoaded):
            app.models.require()  # the UI's slot stays empty: the routed alpha does not take it over
    finally:
        app.close()


def test_memory_budget_evicts_idle_models_and_names_what_does_not_fit(tmp_path: Path, scripted_plugins):
    clock = Clock()
    app = make_app(tmp_path, scripted_plugins, clock, ram_gib=0.6, memory_budget="1")
    try:
        assert app.pool.budget.ram == GiB
        use(app.pool, "alpha")
        clock.now += 1
        use(app.pool, "beta")  # 0.6 + 0.6 > 1 GiB: alpha goes
        assert app.pool.loaded_names() == ["beta"]
        held = app.pool.acquire("beta")
        with pytest.raises(NotEnoughMemory) as err:
            use(app.pool, "gamma")
        assert (
            "gamma" in str(err.value)
            and "0.60 GiB RAM" in str(err.value)
            and "1.00 GiB RAM" in str(err.value)
        )
        app.pool.release(held)
        app.pool.estimator = lambda local, loader, params: MemoryEstimate(0, 2 * GiB, 0, 0, 0, 2 * GiB)
        with pytest.raises(
            NotEnoughMemory, match="larger than the whole memory budget .*cannot fit even alone"
        ):
            use(app.pool, "gamma")
        assert app.pool.loaded_names() == ["beta"]  # nothing was unloaded for a model that can never fit
    finally:
        app.close()


def test_a_failed_load_names_the_model_and_the_others_keep_serving(pool_app: App):
    pool_app.models.load("alpha")
    broken = pool_app.settings.models_dir / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "hearth-scripted", "replies": []}', encoding="utf-8")
    with pytest.raises(
        ModelLoadFailed, match="cannot load model broken: broken: config.json is not a script"
    ):
        use(pool_app.pool, "broken")
    assert pool_app.pool.loaded_names() == ["alpha"]
    assert reply(use(pool_app.pool, "beta")) == "Beta!"
    assert (
        pool_app.core.generate(GenerationRequest(prompt="Say:", max_new_tokens=4, sampling=GREEDY)).text
        == "Alpha!"
    )


def test_idle_unload_frees_models_nobody_used(tmp_path: Path, scripted_plugins):
    clock = Clock()
    app = make_app(tmp_path, scripted_plugins, clock, idle_unload=5)
    try:
        app.models.load("alpha")
        app.pool.touch(app.models)
        use(app.pool, "beta")
        clock.now += 4 * 60
        held = app.pool.acquire("beta")
        assert app.pool.check_idle() == []
        clock.now += 2 * 60  # alpha: 6 minutes unused; beta is in use
        assert app.pool.check_idle() == ["alpha"]
        assert app.models.model is None and "--idle-unload" in app.pool.ui_note
        app.pool.release(held)
        clock.now += 5 * 60
        assert app.pool.check_idle() == ["beta"] and app.pool.loaded_names() == []
    finally:
        app.close()


def test_requests_to_two_models_run_at_the_same_time(pool_app: App):
    pool_app.models.load("alpha")
    beta = use(pool_app.pool, "beta")
    # each model's first step waits until the other one is evaluating too
    both = threading.Barrier(2, timeout=20)
    for model in (pool_app.models.model, beta.models.model):
        model.on_logits = lambda ids, seen=[]: not seen and (seen.append(1), both.wait())
    results: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda s=s, n=n: results.__setitem__(n, reply(s)))
        for s, n in ((pool_app.pool.lease_ready(""), "alpha"), (beta, "beta"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"alpha": "Alpha!", "beta": "Beta!"} and not both.broken


def test_unload_waits_for_requests_or_cancels_them(pool_app: App):
    beta = use(pool_app.pool, "beta")
    started = threading.Event()
    beta.models.model.on_logits = lambda ids: started.set()
    endless = GenerationRequest(
        prompt="Say:", max_new_tokens=100_000, sampling=SamplingParams(do_sample=False, ban_eos_token=True)
    )
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("final", beta.core.generate(endless)))
    worker.start()
    assert started.wait(20)
    assert pool_app.pool.unload("beta", cancel=True)
    worker.join(20)
    assert done["final"].reason == "cancelled" and pool_app.pool.loaded_names() == []
    # without cancel the unload waits for the request to end
    beta = use(pool_app.pool, "beta")
    finished = []
    beta.core.start(
        GenerationRequest(prompt="Say:", max_new_tokens=3, sampling=GREEDY),
        threading.Event(),
        lambda event: finished.append(event),
    )
    assert pool_app.pool.unload("beta")
    assert finished[-1].reason == "stop" and finished[-1].text == "Beta!" and not beta.loaded


def test_two_requests_for_one_unloaded_model_load_it_once(pool_app: App, monkeypatch: pytest.MonkeyPatch):
    gate, loads = threading.Event(), []
    original = ScriptedLoader.load

    def slow(self, path, params):
        loads.append(path.name)
        assert gate.wait(20)
        return original(self, path, params)

    monkeypatch.setattr(ScriptedLoader, "load", slow)
    slots = []
    threads = [threading.Thread(target=lambda: slots.append(use(pool_app.pool, "beta"))) for _ in range(2)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(20)
    assert loads == ["beta"] and len(slots) == 2 and slots[0] is slots[1]


def test_use_in_ui_and_the_model_tab_load_take_a_loaded_model(pool_app: App):
    pool_app.models.load("alpha")
    beta = use(pool_app.pool, "beta")
    pool_app.pool.use_in_ui("beta")
    assert pool_app.models is beta.models and pool_app.core is beta.core
    assert sorted(pool_app.pool.loaded_names()) == ["alpha", "beta"] and pool_app.pool.target("beta") == ""
    assert reply(use(pool_app.pool, "alpha")) == "Alpha!"  # the UI's previous model still serves by name
    gamma = use(pool_app.pool, "gamma")
    pool_app.pool.load_ui("gamma")  # same settings: taken, not loaded twice
    assert pool_app.models is gamma.models and pool_app.pool.loaded_names() == ["gamma", "alpha", "beta"]
    # other settings: the routed copy goes first; the load replaces the UI's model (gamma), as a load always did
    pool_app.pool.load_ui("alpha", params={"n_ctx": 64})
    assert pool_app.models.model.n_ctx == 64
    assert pool_app.pool.loaded_names() == ["alpha", "beta"]


def test_pool_flags(tmp_path: Path, loaders: dict):
    settings = parse_settings(
        ["--max-models", "3", "--memory-budget", "24,10", "--idle-unload", "15"],
        loaders,
        cmd_flags_file=None,
        legacy_settings=None,
    )
    assert (settings.max_models, settings.memory_budget, settings.idle_unload) == (3, "24,10", 15)
    assert (
        parse_budget("24,10", {}) == parse_budget("24, 10", {}) and parse_budget("24,10", {}).vram == 10 * GiB
    )
    auto = parse_budget("auto", {"ram_available": 8 * GiB, "vram_free": 0})
    assert (auto.ram, auto.vram) == (8 * GiB, None) and parse_budget("none", {}).ram is None
    for bad in (
        ["--memory-budget", "lots"],
        ["--memory-budget", "0"],
        ["--max-models", "-1"],
        ["--idle-unload", "-2"],
    ):
        with pytest.raises(ConfigError, match=bad[0]):
            parse_settings(bad, loaders, cmd_flags_file=None, legacy_settings=None)
