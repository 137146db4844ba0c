"""Perplexity and KL-divergence evaluation (webui.evaluation) on the tiny real models, both loaders."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from tests.model_factory import CORPUS, TinyConfig, build_pair
from webui.app import App
from webui.config import Settings
from webui.errors import HearthError, ModelNotFound
from webui.evaluation import (
    EvaluationError,
    EvaluationRequest,
    Evaluator,
    read_results,
    results_path,
    start_evaluation,
)
from webui.evaluation.kl import KL_TOP_K
from webui.evaluation.perplexity import sliding_windows
from webui.evaluation.results import COLUMNS
from webui.jobs import JobBusy
from webui.loader_api import Model
from webui.model_settings import save_settings
from webui.safe_files import UnsafeNameError

TEXT = CORPUS * 2


@pytest.fixture(scope="module")
def eval_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama (HF) and tiny-llama.gguf (its F32 twin), other-llama (other weights, same tokenizer),
    small-vocab (another vocabulary) and broken.gguf (not a GGUF)."""
    root = tmp_path_factory.mktemp("eval-models")
    folder = root / "models"
    folder.mkdir()
    for name in ("tiny-llama", "tiny-llama.gguf"):
        os.symlink(models_dir / name, folder / name)
    other, _ = build_pair(root / "other", TinyConfig(seed=99))
    os.symlink(other, folder / "other-llama")
    small, _ = build_pair(root / "small", TinyConfig(vocab=300))
    os.symlink(small, folder / "small-vocab")
    (folder / "broken.gguf").write_bytes(b"not a gguf at all")
    return folder


@pytest.fixture
def app(eval_models: Path, tmp_path: Path):
    user = tmp_path / "user_data"
    (user / "training" / "datasets").mkdir(parents=True)
    (user / "training" / "datasets" / "corpus.txt").write_text(TEXT, encoding="utf-8")
    app = App.create(Settings(models_dir=eval_models, user_data_dir=user))
    # the GGUF scores as an f32 reference: an f16 KV cache would round its attention
    save_settings(app.models, user, "tiny-llama.gguf", "llama.cpp", {"cache_type": "f32"})
    yield app
    app.models.unload()


def run(app: App, *models: str, **kw) -> tuple:
    kw = {"dataset": "corpus.txt", "stride": 64, "max_length": 128, **kw}
    job = start_evaluation(app, EvaluationRequest(tuple(models), **kw))
    status = job.wait(600)
    assert status.state == "done", status.error
    return status.result


def by_model(outcome, reference: str = "") -> dict:
    return {r.model: r for r in outcome.results if r.reference == reference}


# -- windows --
@pytest.mark.parametrize(
    ("n", "stride", "max_length"),
    [(10, 3, 4), (100, 32, 64), (64, 64, 64), (65, 64, 64), (5, 1, 2), (300, 100, 512), (2, 1, 2)],
)
def test_windows_score_every_token_but_the_first_exactly_once(n: int, stride: int, max_length: int) -> None:
    windows = sliding_windows(n, stride, max_length)
    targets = [t for w in windows for t in range(w.first_target, w.end)]
    if stride < max_length:
        assert targets == list(range(1, n))
    else:  # windows that do not overlap: a window's first token has no context (as in Hugging Face's guide)
        assert targets == [t for t in range(1, n) if t % stride]
    assert windows[0].begin == 0 and windows[0].first_target == 1  # the first window is scored whole
    for w in windows:
        assert w.end - w.begin <= max_length
        assert w.first_target - w.begin >= min(max_length - stride, w.first_target) or w is windows[0]


# -- all-positions logits --
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama.gguf"])
def test_sequence_logits_equal_logits_position_by_position(manager, name: str) -> None:
    model = manager.load(name, params={"cache_type": "f32"} if name.endswith(".gguf") else None)
    ids = model.tokenize(CORPUS[:300])
    fast = model.sequence_logits(ids)
    assert fast.shape == (len(ids), model.vocab_size) and fast.dtype == torch.float32
    slow = Model.sequence_logits(model, ids)  # the contract's default: logits() one prefix at a time
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)
    for i in (0, 1, len(ids) // 2, len(ids) - 1):
        model.sequence_logits(
            ids[:3]
        )  # another sequence in the cache first: logits() must not reuse it wrongly
        torch.testing.assert_close(fast[i], model.logits(ids[: i + 1]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama.gguf"])
def test_generation_cache_stays_truthful_after_sequence_logits(manager, name: str) -> None:
    model = manager.load(name)
    ids = model.tokenize(CORPUS[:200])
    before = model.logits(ids).clone()
    model.sequence_logits(ids[:40])  # shares a prefix with `ids`, then differs
    torch.testing.assert_close(model.logits(ids), before, rtol=1e-3, atol=1e-3)
    model.sequence_logits(ids)
    torch.testing.assert_close(model.logits(ids), before, rtol=1e-3, atol=1e-3)


# -- perplexity --
def hf_guide_perplexity(path: Path, ids: list[int], stride: int, max_length: int) -> float:
    """Hugging Face's perplexity guide (labels -100, the model's own loss), each window weighted by its loss tokens."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    encodings = torch.tensor([ids])
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        # the loss averages the labels left after the model's shift by one (the guide subtracts 1 from
        # all labels, which is right for the first window only: later windows' first label is -100)
        num_valid = (target_ids[:, 1:] != -100).sum().item()
        nll_sum += loss.double().item() * num_valid
        n_tokens += num_valid
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens)


def test_perplexity_equals_a_direct_torch_computation(app: App, eval_models: Path) -> None:
    result = by_model(run(app, "tiny-llama"))["tiny-llama"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(eval_models / "tiny-llama")
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    ids = [tokenizer.bos_token_id, *ids]
    assert result.tokens == len(ids) - 1
    expected = hf_guide_perplexity(eval_models / "tiny-llama", ids, 64, 128)
    assert abs(result.perplexity - expected) / expected < 1e-5, (result.perplexity, expected)


def test_gguf_f32_agrees_with_its_hf_folder(app: App, capsys) -> None:
    results = by_model(run(app, "tiny-llama", "tiny-llama.gguf"))
    hf, gguf = results["tiny-llama"], results["tiny-llama.gguf"]
    assert (hf.loader, gguf.loader) == ("Transformers", "llama.cpp")
    assert hf.tokens == gguf.tokens
    relative = abs(hf.perplexity - gguf.perplexity) / hf.perplexity
    with capsys.disabled():
        print(
            f"\nperplexity HF {hf.perplexity:.6f} vs F32 GGUF {gguf.perplexity:.6f}: relative difference {relative:.2e}"
        )
    assert relative < 1e-4


# -- KL divergence --
def test_kl_of_a_model_against_itself_is_zero(app: App) -> None:
    outcome = run(app, "tiny-llama.gguf", reference="tiny-llama.gguf")
    ref, cand = outcome.results
    assert ref.reference == "" and ref.kl_divergence is None  # the reference's own row: perplexity only
    assert cand.reference == "tiny-llama.gguf"
    assert cand.kl_divergence == 0.0 and cand.top1_agreement == 1.0
    assert cand.perplexity == pytest.approx(ref.perplexity, rel=1e-9)


def test_kl_between_different_models_is_positive(app: App) -> None:
    outcome = run(app, "other-llama", "tiny-llama.gguf", reference="tiny-llama")
    results = by_model(outcome, "tiny-llama")
    assert results["other-llama"].kl_divergence > 0.5  # unrelated random weights
    assert results["other-llama"].top1_agreement < 0.5
    twin = results["tiny-llama.gguf"]  # the same weights in another engine: tiny but real differences
    assert 0 <= twin.kl_divergence < 1e-3 and twin.top1_agreement > 0.99


def test_top_k_kl_is_a_close_lower_bound_of_the_full_kl(app: App) -> None:
    request = EvaluationRequest(("other-llama",), "corpus.txt", 64, 128, reference="tiny-llama")
    full = Evaluator(app.models, app.core.worker, app.settings.user_data_dir, kl_top_k=100_000)
    top = Evaluator(app.models, app.core.worker, app.settings.user_data_dir)
    figures = []
    for evaluator in (full, top):
        job = app.jobs.start("evaluation", lambda ctx, e=evaluator: e.run(request, ctx))
        figures.append(job.wait(600).result.results[-1].kl_divergence)
    print(f"\nKL divergence, full vocabulary {figures[0]:.6f}, top-{KL_TOP_K} {figures[1]:.6f}")
    assert figures[1] <= figures[0] + 1e-9
    assert figures[1] > 0.9 * figures[0], figures


def test_models_of_another_vocabulary_are_refused_and_the_run_goes_on(app: App) -> None:
    outcome = run(app, "small-vocab", "tiny-llama.gguf", reference="tiny-llama")
    assert len(outcome.errors) == 1 and outcome.errors[0].startswith("small-vocab:")
    assert "vocabulary" in outcome.errors[0]
    assert "tiny-llama.gguf" in by_model(outcome, "tiny-llama")


# -- the run: saved settings, failures, restore, results file --
def test_a_model_that_fails_to_load_is_recorded_and_the_run_goes_on(app: App) -> None:
    outcome = run(app, "broken.gguf", "tiny-llama.gguf")
    assert [r.model for r in outcome.results] == ["tiny-llama.gguf"]
    assert outcome.errors[0].startswith("broken.gguf:") and "GGUF" in outcome.errors[0]


def test_a_reference_that_fails_stops_the_run(app: App) -> None:
    job = start_evaluation(
        app, EvaluationRequest(("tiny-llama",), "corpus.txt", 64, 128, reference="broken.gguf")
    )
    status = job.wait(600)
    assert status.state == "failed" and "reference model broken.gguf" in status.error
    assert not results_path(app.settings.user_data_dir).exists()


def test_the_loaded_model_is_loaded_again_with_its_settings(app: App) -> None:
    app.models.load("tiny-llama.gguf", "llama.cpp", {"n_ctx": 512})
    run(app, "tiny-llama", "other-llama")
    assert (app.models.model_name, app.models.load_params["n_ctx"]) == ("tiny-llama.gguf", 512)


def test_nothing_stays_loaded_when_nothing_was(app: App) -> None:
    outcome = run(app, "tiny-llama.gguf")
    assert outcome.results[0].quantization == "ALL_F32"
    assert app.models.model is None


def test_max_length_beyond_the_context_is_clamped_with_a_notice(app: App) -> None:
    app.models.load("tiny-llama.gguf", "llama.cpp", {"n_ctx": 256})  # the loaded model is measured as it is
    outcome = run(app, "tiny-llama.gguf", stride=200, max_length=1000)
    assert outcome.results[0].max_length == 256 and outcome.results[0].stride == 200
    assert any("max_length 1000" in n and "256" in n for n in outcome.notices)


def test_results_are_appended_to_the_csv_with_one_header(app: App) -> None:
    run(app, "tiny-llama.gguf", comment="=first")
    run(app, "tiny-llama", comment="second")
    path = results_path(app.settings.user_data_dir)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 3
    columns, rows = read_results(app.settings.user_data_dir)
    assert columns == COLUMNS
    newest, oldest = (dict(zip(columns, r, strict=True)) for r in rows)
    assert (newest["model"], newest["comment"], newest["dataset"]) == ("tiny-llama", "second", "corpus.txt")
    assert oldest["comment"] == "'=first"  # a spreadsheet must not run it as a formula
    assert float(oldest["perplexity"]) > 1 and int(oldest["tokens"]) > 100


def test_stop_cancels_between_windows(app: App) -> None:
    app.models.load("tiny-llama", "Transformers")
    job = start_evaluation(
        app, EvaluationRequest(("tiny-llama.gguf",), "corpus.txt", stride=1, max_length=16)
    )
    while job.status().done == 0 and job.status().running:  # wait for the first window
        job.wait(0.05)
    app.jobs.stop("evaluation")
    status = job.wait(600)
    assert status.state == "cancelled"
    assert 0 < status.done < status.total
    assert not results_path(app.settings.user_data_dir).exists()
    assert app.models.model_name == "tiny-llama"  # restored after Stop too


# -- bad input, refused before anything is loaded --
@pytest.mark.parametrize(
    ("kw", "error", "words"),
    [
        (
            {"stride": 256, "max_length": 128},
            EvaluationError,
            "stride (256) must not be larger than max_length",
        ),
        ({"stride": 0}, EvaluationError, "stride must be at least 1"),
        ({"dataset": "../secrets.txt"}, UnsafeNameError, "dataset name"),
        ({"dataset": "missing.txt"}, EvaluationError, "is not in"),
        ({"dataset": "empty.txt"}, EvaluationError, "is empty"),
        ({"dataset": "binary.txt"}, EvaluationError, "binary"),
        ({"dataset": "latin1.txt"}, EvaluationError, "not UTF-8"),
        ({"models": ("nope",)}, ModelNotFound, "no model named 'nope'"),
        ({"models": ()}, EvaluationError, "choose at least one model"),
        ({"reference": "../tiny-llama"}, ModelNotFound, "no model named"),
    ],
)
def test_bad_input_is_refused_by_name(app: App, kw: dict, error: type[HearthError], words: str) -> None:
    datasets = app.settings.user_data_dir / "training" / "datasets"
    (datasets / "empty.txt").write_text(" \n\n")
    (datasets / "binary.txt").write_bytes(b"GGUF\0\0\x01")
    (datasets / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    request = EvaluationRequest(
        **{"models": ("tiny-llama",), "dataset": "corpus.txt", "stride": 64, "max_length": 128, **kw}
    )
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        start_evaluation(app, request)
    assert app.jobs.get("evaluation") is None and app.models.model is None


# -- the command line --
def cli(app: App, *args: str) -> int:
    """`python -m webui.evaluate` over the test's folders; windows of 128 tokens every 64 unless `args` say."""
    from webui.evaluate import main

    folders = [
        "--models-dir",
        str(app.settings.models_dir),
        "--user-data-dir",
        str(app.settings.user_data_dir),
    ]
    return main(["--stride", "64", "--max-length", "128", *args, *folders])


def test_cli_prints_results_and_appends_them(app: App, capsys) -> None:
    code = cli(
        app,
        "--models",
        "tiny-llama.gguf",
        "--dataset",
        "corpus.txt",
        "--reference",
        "tiny-llama",
        "--comment",
        "cli",
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "kl_divergence" in out and "tiny-llama.gguf" in out and "cli" in out
    assert len(read_results(app.settings.user_data_dir)[1]) == 2  # the reference and the model


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--models", "tiny-llama", "--dataset", "corpus.txt", "--stride", "512"], "stride (512)"),
        (["--models", "tiny-llama", "--dataset", "../x.txt"], "dataset name"),
        (["--models", "nope", "--dataset", "corpus.txt"], "no model named"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(app: App, capsys, args: list[str], words: str) -> None:
    assert cli(app, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err


def test_cli_exits_1_when_a_model_failed(app: App, capsys) -> None:
    code = cli(app, "--models", "broken.gguf", "tiny-llama.gguf", "--dataset", "corpus.txt")
    captured = capsys.readouterr()
    assert code == 1 and "error: broken.gguf:" in captured.err and "tiny-llama.gguf" in captured.out


def test_a_loader_without_its_own_sequence_logits_gives_the_same_perplexity(app: App, monkeypatch) -> None:
    from loaders.transformers_loader import TransformersModel

    fast = by_model(run(app, "tiny-llama"))["tiny-llama"].perplexity
    monkeypatch.setattr(TransformersModel, "sequence_logits", Model.sequence_logits)  # as ExLlamaV2 is now
    default = by_model(run(app, "tiny-llama"))["tiny-llama"].perplexity
    assert abs(fast - default) / fast < 1e-5


def test_no_evaluation_while_a_training_runs(app: App) -> None:
    import threading

    release = threading.Event()
    training = app.jobs.start("training", lambda ctx: release.wait(60))
    try:
        with pytest.raises(JobBusy, match="training job is already running"):
            start_evaluation(app, EvaluationRequest(("tiny-llama",), "corpus.txt", 64, 128))
    finally:
        release.set()
        training.wait(60)


def test_loras_are_recorded_and_applied_again_after_the_run(app: App, tmp_path: Path) -> None:
    from tests.model_factory import make_peft_adapter
    from webui.loras import AppliedLora

    adapter = make_peft_adapter(app.settings.models_dir / "tiny-llama", tmp_path / "style")
    app.models.load("tiny-llama")
    app.models.apply_loras([AppliedLora("style", adapter, 1.0)])
    first = by_model(run(app, "tiny-llama", "other-llama"))
    assert (first["tiny-llama"].loras, first["other-llama"].loras) == ("style", "")
    assert (app.models.model_name, app.models.lora_names) == ("tiny-llama", ["style"])
    again = by_model(run(app, "tiny-llama"))["tiny-llama"]  # the adapter really is applied again
    assert again.loras == "style" and again.perplexity == pytest.approx(
        first["tiny-llama"].perplexity, rel=1e-6
    )
    app.models.apply_loras([])
    base = by_model(run(app, "tiny-llama"))["tiny-llama"]
    assert base.loras == "" and abs(base.perplexity - again.perplexity) / base.perplexity > 1e-3
