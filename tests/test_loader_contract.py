"""The loader contract from a plugin author's side: a loader registered through the real ``hearth_loaders``
hook, installed through a ``hearth.loaders`` entry point, listed by ``python -m webui --help``, picked for
its models and driven by the App; and the example plugin of docs/loaders.md installed with pip (offline)
and generating, with the doc checked against its code."""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.scripted_loader import ScriptedLoader, ScriptedModel, write_script
from webui.__main__ import main
from webui.app import App
from webui.config import Settings
from webui.errors import LoaderError
from webui.generation import GenerationRequest
from webui.loader_api import Loader, Model
from webui.plugins import BUILTIN_LOADER_MODULES, collect_loaders, hookimpl, make_plugin_manager
from webui.sampling import SamplingParams

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "example_loader"
LOADERS_DOC = ROOT / "docs" / "loaders.md"
GREEDY = SamplingParams(do_sample=False)


def generate(app: App, prompt: str, **fields) -> str:
    return app.core.generate(GenerationRequest(prompt=prompt, sampling=GREEDY, **fields)).text


def assert_follows_the_model_contract(model: Model) -> None:
    """What the generation core relies on, checked on any Model."""
    text = "Hello, wörld!"
    ids = model.tokenize(text)
    assert ids[0] == model.bos_token_id and model.tokenize(text, add_bos=False) == ids[1:]
    assert model.detokenize(ids) == text  # special tokens are skipped
    assert b"".join(model.token_bytes(t) for t in ids[1:]).decode("utf-8") == text
    assert all(0 <= t < model.vocab_size for t in [*ids, *model.eos_token_ids])
    scores = model.logits(ids)
    assert scores.dtype == torch.float32 and scores.shape == (model.vocab_size,)
    assert torch.equal(model.logits(ids[:3]).clone(), model.logits(ids[:3]))  # same ids, same logits
    assert model.n_ctx > 0 and model.info.vocab_size == model.vocab_size
    assert model.info.as_dict()["loader"] == model.info.loader
    assert len(model.vocabulary.texts) == model.vocab_size
    # several requests at once only with a stepper that advances them together (docs/loaders.md)
    assert model.parallel >= 1 and (model.parallel == 1 or model.stepper is not None)


# -- through the real hook --------------------------------------------------------------------------
def test_hook_hearth_loaders(scripted_plugins, scripted_app: App, caplog: pytest.LogCaptureFixture) -> None:
    """Every plugin's loaders are collected, built-ins first; a name already taken is reported and
    skipped; the App lists the plugin's loader, picks it for its models and generates with it."""

    class Impostor(ScriptedLoader):
        pass

    class LateComer:
        @hookimpl
        def hearth_loaders(self) -> list[type[Loader]]:
            return [Impostor]

    scripted_plugins.register(LateComer(), name="late")
    with caplog.at_level(logging.WARNING, logger="webui.plugins"):
        loaders = collect_loaders(scripted_plugins)
    assert loaders["scripted"] is ScriptedLoader and "'scripted' is already taken" in caplog.text
    builtin = [name for name, cls in loaders.items()  # a built-in module's hook may list classes from beside it
               if cls.__module__.split("_hf")[0] in BUILTIN_LOADER_MODULES]
    assert list(loaders)[: len(builtin)] == builtin

    assert scripted_app.loaders["scripted"] is ScriptedLoader
    write_script(scripted_app.settings.models_dir, "hello", ["Hel", "lo", " world", "!"])
    [listed] = scripted_app.models.list_models()
    assert listed.name == "hello" and scripted_app.models.choose_loader(listed.path) == "scripted"
    model = scripted_app.models.load("hello")
    assert isinstance(model, ScriptedModel) and scripted_app.models.loader_name == "scripted"
    assert generate(scripted_app, "Say it:", max_new_tokens=10) == "Hello world!"


def test_a_loader_is_refused_for_what_it_cannot_load(scripted_app: App) -> None:
    (scripted_app.settings.models_dir / "not-a-script").mkdir(parents=True)
    (scripted_app.settings.models_dir / "not-a-script" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(LoaderError, match="the scripted loader cannot load not-a-script"):
        scripted_app.models.load("not-a-script", loader="scripted")
    write_script(scripted_app.settings.models_dir, "hello", ["Hi"])
    with pytest.raises(LoaderError, match="scripted has no parameter n_gpu_layer"):
        scripted_app.models.load("hello", params={"n_gpu_layer": 1})
    with pytest.raises(LoaderError, match="n_ctx: -1 is below the minimum 0"):
        scripted_app.models.load("hello", params={"n_ctx": -1})
    assert scripted_app.models.load("hello", params={"n_ctx": "64"}).n_ctx == 64  # as a form sends it


def test_the_scripted_model_follows_the_model_contract(say) -> None:
    assert_follows_the_model_contract(say(["Hel", "lo"]))


# -- through an entry point -------------------------------------------------------------------------
def test_a_loader_installed_through_an_entry_point_is_listed_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``pip install`` of a plugin leaves behind, written by hand: a dist-info with the entry point."""
    site = tmp_path / "site"
    dist = site / "hearth_scripted-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hearth-scripted\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hearth.loaders]\nscripted = tests.scripted_loader\n")
    monkeypatch.syspath_prepend(str(site))
    assert "scripted" not in collect_loaders(make_plugin_manager(load_entry_points=False))

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert re.search(r"--loader LOADER .*One of: .*\bscripted\b", help_text)
    assert (
        "--native-greedy, --no-native-greedy Serve plain greedy requests from native_generate." in help_text
    )

    app = App.create(Settings(models_dir=tmp_path / "models", user_data_dir=tmp_path / "user"))
    assert app.plugins.get_plugin("scripted") is sys.modules["tests.scripted_loader"]
    write_script(app.settings.models_dir, "hello", ["Hel", "lo"])
    try:
        app.models.load("hello")
        assert generate(app, "Say it:", max_new_tokens=5) == "Hello"
    finally:
        app.models.unload()


# -- the example plugin of docs/loaders.md -----------------------------------------------------------
@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/example_loader installed with pip, offline, into a folder of its own (from a copy, so the
    build leaves nothing in docs/)."""
    tmp = tmp_path_factory.mktemp("example-loader")
    source, site = tmp / "source", tmp / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--target",
        str(site),
        str(source),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return site


@pytest.fixture
def example_app(example_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An App started the ordinary way (installed plugins included) with the example installed, and a
    bigram model folder "abc" in its models folder."""
    monkeypatch.syspath_prepend(str(example_site))
    models = tmp_path / "models"
    (models / "abc").mkdir(parents=True)
    (models / "abc" / "config.json").write_text(json.dumps({"model_type": "bigram"}))
    (models / "abc" / "corpus.txt").write_text("abc")
    app = App.create(Settings(models_dir=models, user_data_dir=tmp_path / "user"))
    yield app
    app.models.unload()
    sys.modules.pop("hearth_bigram", None)


def test_the_documented_example_loader_installs_loads_and_generates(
    example_app: App, example_site: Path
) -> None:
    loader = example_app.loaders["bigram"]
    assert Path(sys.modules[loader.__module__].__file__).parent == example_site  # the installed copy
    [listed] = example_app.models.list_models()
    assert example_app.models.choose_loader(listed.path) == "bigram"
    model = example_app.models.load("abc")
    assert model.info.as_dict()["architecture"] == "bigram"
    done = example_app.core.generate(GenerationRequest(prompt="", max_new_tokens=10, sampling=GREEDY))
    assert (done.text, done.reason) == ("abc", "stop")  # <s> a b c </s>: every pair it has seen
    assert generate(example_app, "b", max_new_tokens=10) == "c"
    assert_follows_the_model_contract(model)


def test_the_example_loader_refuses_bad_folders_and_parameters(example_app: App) -> None:
    with pytest.raises(LoaderError, match="smoothing: 0.0 is below the minimum"):
        example_app.models.load("abc", params={"smoothing": 0})
    (example_app.settings.models_dir / "abc" / "corpus.txt").unlink()
    with pytest.raises(LoaderError, match="abc has no corpus.txt"):
        example_app.models.load("abc")
    assert example_app.models.model is None


def doc_section(title: str) -> str:
    """The text of docs/loaders.md under the heading ``## title``, up to the next such heading."""
    doc = LOADERS_DOC.read_text(encoding="utf-8")
    start = doc.index(f"\n## {title}\n")
    end = doc.find("\n## ", start + 1)
    return doc[start : end if end >= 0 else len(doc)]


def code_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.DOTALL)


def test_loaders_md_shows_the_example_as_it_is() -> None:
    """The walk-through's code blocks are the example's code, verbatim, and together show every function
    and class of its module: the doc cannot drift from the plugin that the tests install."""
    module = (EXAMPLE / "hearth_bigram.py").read_text(encoding="utf-8")
    project = (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")
    blocks = [
        (lang, code)
        for lang, code in code_blocks(doc_section("The example, walked through"))
        if lang in ("python", "toml")
    ]
    assert {lang for lang, _ in blocks} == {"python", "toml"}
    for lang, code in blocks:
        assert code in (module if lang == "python" else project), f"not in the example:\n{code}"
    shown = "".join(code for lang, code in blocks if lang == "python")
    for node in ast.parse(module).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            assert f"{'class' if isinstance(node, ast.ClassDef) else 'def'} {node.name}" in shown, node.name


def test_loaders_md_test_example_passes(example_app: App, tmp_path: Path) -> None:
    """The test docs/loaders.md offers plugin authors, run as written against the installed example."""
    [(_, code)] = [block for block in code_blocks(doc_section("Testing a loader")) if block[0] == "python"]
    namespace: dict = {}
    exec(compile(code, str(LOADERS_DOC), "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1
    (tmp_path / "doc").mkdir()
    tests[0](tmp_path / "doc")
