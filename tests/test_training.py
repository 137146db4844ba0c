"""LoRA training on the tiny random Llama: the loss really falls, the adapter reloads with peft and changes
greedy output, the base model comes back bit for bit, Stop saves a usable adapter, resume continues from
the checkpoint's step, prompts are masked, and every bad input is one clear message with nothing left in
loras/."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from webui.app import App
from webui.config import Settings
from webui.jobs import JobBusy
from webui.training import TRAINING_JOB, TrainingError, TrainingParams, start_training
from webui.training.datasets import IGNORE, load_examples
from webui.training.memory import estimate_training

ROOT = Path(__file__).resolve().parent.parent
TEXT = "The quick brown fox jumps over the lazy dog. " * 40
PROBE = [1, 40, 41, 42, 43]
FAST = {"cutoff_len": 32, "overlap_len": 8, "micro_batch_size": 4, "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def app(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> App:
    root = tmp_path_factory.mktemp("training")
    app = App.create(
        Settings(
            models_dir=models_dir,
            user_data_dir=root / "user_data",
            loras_dir=root / "loras",
            templates_dir=ROOT / "templates",
        )
    )
    app.models.load("tiny-llama", "Transformers")
    yield app
    app.models.unload()


@pytest.fixture
def data(app: App, tmp_path: Path) -> Path:
    """A fresh datasets folder and loras/ for each test."""
    app.settings.user_data_dir = tmp_path / "user_data"
    app.settings.loras_dir = tmp_path / "loras"
    folder = tmp_path / "user_data" / "training" / "datasets"
    folder.mkdir(parents=True)
    (folder / "fox.txt").write_text(TEXT, encoding="utf-8")
    return folder


def logits(app: App) -> torch.Tensor:
    with torch.no_grad():
        return app.models.model._model(torch.tensor([PROBE])).logits.clone()


def greedy(module: torch.nn.Module, n: int = 8) -> list[int]:
    with torch.no_grad():
        return module.generate(torch.tensor([PROBE]), max_new_tokens=n, do_sample=False)[0].tolist()[
            len(PROBE) :
        ]


def assert_nothing_written(app: App) -> None:
    loras = app.settings.loras_dir
    assert not loras.exists() or not list(loras.iterdir())


def wait_done(app: App, timeout: float = 120.0):
    job = app.jobs.get(TRAINING_JOB)
    status = job.wait(timeout)
    assert not status.running, "training did not finish in time"
    return status


@pytest.mark.slow
def test_training_lowers_loss_saves_adapter_and_restores_base(app: App, data: Path, models_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    before = logits(app)
    values = {"epochs": 4, "gradient_checkpointing": True, "eval_dataset": "fox.txt", "eval_every": 10}
    start_training(app, {"name": "fox", "dataset": "fox.txt", **values, **FAST})
    status = wait_done(app)
    assert status.state == "done", status.error
    losses = [row["loss"] for row in status.history if "loss" in row]
    assert len(losses) >= 30 and losses[-1] < 0.5 * losses[0]
    evals = [row["eval_loss"] for row in status.history if "eval_loss" in row]
    assert len(evals) >= 3 and evals[-1] < 0.5 * evals[0]
    assert torch.equal(logits(app), before)  # LoRA layers gone, weights untouched
    module = app.models.model._model
    assert (
        not module.training and not hasattr(module, "peft_config") and not module.is_activation_checkpointing
    )
    out = app.settings.loras_dir / "fox"
    assert {p.name for p in app.settings.loras_dir.iterdir()} == {"fox"}  # no temp folder left
    saved = json.loads((out / "training_parameters.json").read_text())
    assert saved["rank"] == 8 and saved["base_model"] == "tiny-llama" and saved["steps"] == status.total
    assert len(json.loads((out / "training_log.json").read_text())) == status.total
    base = AutoModelForCausalLM.from_pretrained(models_dir / "tiny-llama", dtype=torch.float32).eval()
    plain = greedy(base)
    tuned = PeftModel.from_pretrained(base, out).eval()
    assert greedy(tuned) != plain


@pytest.mark.slow
def test_stop_saves_usable_adapter_and_resume_continues(app: App, data: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = start_training(app, {"name": "halt", "dataset": "fox.txt", "epochs": 50, "save_every": 2, **FAST})
    deadline = time.monotonic() + 60
    while job.status().done < 5 and job.status().running and time.monotonic() < deadline:
        time.sleep(0.02)
    app.jobs.stop(TRAINING_JOB)
    status = wait_done(app)
    assert status.state == "cancelled" and status.done >= 5 and status.done < status.total
    out = app.settings.loras_dir / "halt"
    stopped_at = status.done
    assert (out / "adapter_model.safetensors").is_file() and (
        out / "checkpoints" / f"step-{stopped_at}"
    ).is_dir()
    base = AutoModelForCausalLM.from_pretrained(app.models.models_dir / "tiny-llama", dtype=torch.float32)
    assert PeftModel.from_pretrained(base, out) is not None
    # resume from the checkpoint: a short run (fewer epochs) that continues at the next step
    start_training(app, {"name": "halt", "dataset": "fox.txt", "epochs": 2, "resume_from": "halt", **FAST})
    status = wait_done(app)
    steps = [row["step"] for row in status.history if "loss" in row]
    assert status.state == "done" and steps[0] == stopped_at + 1 and steps[-1] == status.total
    log = json.loads((out / "training_log.json").read_text())
    assert [row["step"] for row in log] == list(range(1, status.total + 1))


def test_instruction_records_mask_the_prompt(app: App, data: Path) -> None:
    records = [
        {"instruction": "Say hi", "output": "Hello there"},
        {"instruction": "Add", "input": "2 2", "output": "4"},
    ]
    path = data / "alpaca.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    tokenizer = app.models.model.hf_tokenizer
    examples = load_examples(path, tokenizer, TrainingParams(), ROOT / "templates" / "training_formats")
    answer = tokenizer.encode("Hello there", add_special_tokens=False) + [tokenizer.eos_token_id]
    first = examples[0]
    n_prompt = len(first.input_ids) - len(answer)
    assert first.labels[:n_prompt] == [IGNORE] * n_prompt and first.labels[n_prompt:] == answer
    assert first.input_ids[n_prompt:] == answer
    assert "Input:" in tokenizer.decode(examples[1].input_ids)  # the instruction,input prompt was picked
    on_inputs = load_examples(
        path, tokenizer, TrainingParams(train_on_inputs=True), ROOT / "templates" / "training_formats"
    )
    assert on_inputs[0].labels[1:] == on_inputs[0].input_ids[1:]  # all but BOS, which nothing predicts


def test_chat_records_learn_only_assistant_turns(app: App, data: Path) -> None:
    path = data / "chat.json"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    path.write_text(json.dumps([{"messages": messages}]), encoding="utf-8")
    tokenizer = app.models.model.hf_tokenizer
    (example,) = load_examples(path, tokenizer, TrainingParams(), ROOT / "templates" / "training_formats")
    learned = tokenizer.decode([t for t in example.labels if t != IGNORE])
    assert learned.strip() == "Hello</s>" and "Hi" in tokenizer.decode(example.input_ids)


def test_raw_text_chunks_overlap(app: App, data: Path) -> None:
    tokenizer = app.models.model.hf_tokenizer
    examples = load_examples(
        data / "fox.txt", tokenizer, TrainingParams(cutoff_len=32, overlap_len=8), Path()
    )
    assert len(examples) > 3 and all(len(e.input_ids) <= 32 for e in examples)
    assert examples[1].input_ids[:8] == examples[0].input_ids[-8:]


def test_memory_estimate_and_refusal(app: App, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = app.models.model._model
    plain = estimate_training(module, TrainingParams(micro_batch_size=8, cutoff_len=512))
    saving = estimate_training(
        module, TrainingParams(micro_batch_size=8, cutoff_len=512, gradient_checkpointing=True)
    )
    assert saving.activations < plain.activations and plain.fits
    assert plain.full_finetune == 4 * plain.weights and plain.lora_state < plain.weights
    monkeypatch.setattr(
        "webui.training.memory.available_memory",
        lambda: {"ram_available": 1 << 20, "vram_free": 0, "ram_total": 1 << 20, "vram_total": 0},
    )
    with pytest.raises(TrainingError, match="more memory"):
        start_training(app, {"name": "big", "dataset": "fox.txt"})
    assert_nothing_written(app)


@pytest.mark.parametrize(
    ("setup", "values", "message"),
    [
        (lambda d: (d / "empty.txt").write_text("  \n"), {"dataset": "empty.txt"}, "is empty"),
        (lambda d: (d / "blob.txt").write_bytes(b"\x00\x01\x02binary"), {"dataset": "blob.txt"}, "binary"),
        (
            lambda d: (d / "bad.jsonl").write_text(
                '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n'
            ),
            {"dataset": "bad.jsonl"},
            "record 2: missing field 'output'",
        ),
        (lambda d: None, {"dataset": "../secrets.txt"}, "not allowed"),
        (lambda d: None, {"dataset": "missing.txt"}, "not found"),
        (lambda d: None, {"name": "../evil"}, "not allowed"),
        (lambda d: None, {"name": "a/b"}, "not allowed"),
        (lambda d: None, {"name": ""}, "give the adapter a name"),
        (lambda d: None, {"rank": 0}, "rank"),
        (lambda d: None, {"resume_from": "nothing"}, "no checkpoints"),
    ],
)
def test_bad_input_is_one_clear_message(app: App, data: Path, setup, values: dict, message: str) -> None:
    setup(data)
    with pytest.raises(TrainingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        start_training(app, {"name": "x", "dataset": "fox.txt", **values})
    assert_nothing_written(app)


def test_existing_name_refused_unless_overwrite(app: App, data: Path) -> None:
    taken = app.settings.loras_dir / "taken"
    taken.mkdir(parents=True)
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(TrainingError, match="already exists"):
        start_training(app, {"name": "taken", "dataset": "fox.txt"})
    assert (taken / "keep.txt").read_text() == "mine"
    start_training(app, {"name": "taken", "dataset": "fox.txt", "overwrite": True, "epochs": 0.1, **FAST})
    assert wait_done(app).state == "done"
    assert (taken / "adapter_model.safetensors").is_file() and not (taken / "keep.txt").exists()


def test_second_training_while_one_runs_is_busy(app: App, data: Path) -> None:
    app.models.lock.acquire()  # a generation holds the model: the first training waits for it
    try:
        start_training(app, {"name": "one", "dataset": "fox.txt", **FAST})
        with pytest.raises(JobBusy):
            start_training(app, {"name": "two", "dataset": "fox.txt", **FAST})
        app.jobs.stop(TRAINING_JOB)
    finally:
        app.models.lock.release()
    assert wait_done(app).state == "cancelled"
    assert_nothing_written(app)  # stopped before it started


def test_needs_a_transformers_model(models_dir: Path, tmp_path: Path) -> None:
    app = App.create(Settings(models_dir=models_dir, user_data_dir=tmp_path, loras_dir=tmp_path / "loras"))
    try:
        with pytest.raises(TrainingError, match="no model is loaded"):
            start_training(app, {"name": "x", "dataset": "fox.txt"})
        app.models.load("tiny-llama.gguf")
        with pytest.raises(TrainingError, match="Transformers loader"):
            start_training(app, {"name": "x", "dataset": "fox.txt"})
    finally:
        app.models.unload()
    assert not (tmp_path / "loras").exists()


def test_cli_trains_and_rejects_bad_input(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from webui.train import main

    folder = tmp_path / "user_data" / "training" / "datasets"
    folder.mkdir(parents=True)
    (folder / "fox.txt").write_text(TEXT, encoding="utf-8")
    common = [
        "--model",
        "tiny-llama",
        "--models-dir",
        str(models_dir),
        "--lora-dir",
        str(tmp_path / "loras"),
        "--user-data-dir",
        str(tmp_path / "user_data"),
        "--dataset",
        "fox.txt",
    ]
    assert main([*common, "--name", "a/b"]) == 2
    assert "adapter name 'a/b' is not allowed" in capsys.readouterr().err
    assert (
        main(
            [*common, "--name", "cli", "--epochs", "0.5", "--cutoff-len", "32", "--no-gradient-checkpointing"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Training memory on cpu" in out and "adapter saved to" in out
    assert (tmp_path / "loras" / "cli" / "adapter_model.safetensors").is_file()


def test_refused_while_loras_are_applied(app: App, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.models, "loras", ["style"], raising=False)  # what the Model tab's selector sets
    with pytest.raises(TrainingError, match="LoRAs are applied"):
        start_training(app, {"name": "x", "dataset": "fox.txt"})
    assert_nothing_written(app)
