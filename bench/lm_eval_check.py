"""lm-evaluation-harness against Hearth, compared item by item with lm-eval's own `hf` backend.

Runs two small local tasks (bench/lm_eval_task/: 10 multiple-choice items, 10 perplexity texts) twice:
with `local-completions` against a Hearth API started in this process on tiny-llama.gguf (f32 KV cache),
and with lm-eval's `hf` backend on the tiny-llama folder (the same weights). Prints each item's
log-likelihoods from both and their differences. No network: the tiny models are built here, the tasks
are local JSONL files. Needs `pip install lm-eval` (not a Hearth dependency).

    .venv/bin/python bench/lm_eval_check.py [--batch-size 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.model_factory import build_pair  # noqa: E402
from tests.test_api_server import free_port  # noqa: E402
from webui.app import App  # noqa: E402
from webui.config import Settings  # noqa: E402
from webui.server import start_api  # noqa: E402

TASK_DIR = Path(__file__).resolve().parent / "lm_eval_task"
TASKS = ["hearth_mc", "hearth_rolling"]


@contextlib.contextmanager
def hearth(models: Path, user_data: Path) -> Iterator[str]:
    """A Hearth API on tiny-llama.gguf with an f32 KV cache (the choice for scoring); yields its URL."""
    app = App.create(Settings(models_dir=models, user_data_dir=user_data, api_port=free_port()))
    app.models.load("tiny-llama.gguf", params={"cache_type": "f32"})
    server, thread = start_api(app)
    try:
        yield f"http://127.0.0.1:{app.settings.api_port}/v1/completions"
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(10)
        app.models.unload()


def evaluate(model: str, model_args: dict[str, Any], batch_size: int) -> dict[str, list[list[float]]]:
    """{task: per item, the log-likelihood of each request (each choice / the whole text)}."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    cwd = Path.cwd()
    os.chdir(TASK_DIR)  # the task files name their JSONL relative to here
    try:
        out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=TASKS, batch_size=batch_size,
                                      task_manager=TaskManager(include_path=str(TASK_DIR), include_defaults=False),
                                      log_samples=True, bootstrap_iters=0)
    finally:
        os.chdir(cwd)
    per_task = {}
    for task in TASKS:
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        per_task[task] = [[_loglikelihood(r) for r in s["resps"]] for s in samples]
    return per_task


def _loglikelihood(response: list[Any]) -> float:
    value = response[0]
    return float(value[0] if isinstance(value, list | tuple) else value)


def report(via_api: dict[str, list[list[float]]], via_hf: dict[str, list[list[float]]]) -> float:
    worst = 0.0
    for task in TASKS:
        print(f"\n{task}: item  local-completions (Hearth)  hf  |diff|")
        for i, (a, b) in enumerate(zip(via_api[task], via_hf[task], strict=True)):
            diffs = [abs(x - y) for x, y in zip(a, b, strict=True)]
            worst = max(worst, *diffs)
            cells = "  ".join(f"{x:10.5f} {y:10.5f}" for x, y in zip(a, b, strict=True))
            print(f"  {i:2d}  {cells}  max {max(diffs):.2e}")
            if task == "hearth_mc" and a.index(max(a)) != b.index(max(b)):
                print("      ^ the chosen answer differs")
    print(f"\nlargest difference: {worst:.2e} nats")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4, help="prompts per request to Hearth (a prompt batch)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        build_pair(models)
        folder = str(models / "tiny-llama")
        with hearth(models, Path(tmp) / "user_data") as url:
            via_api = evaluate("local-completions", {"base_url": url, "model": "tiny-llama.gguf",
                                                     "tokenizer_backend": "huggingface", "tokenizer": folder,
                                                     "max_length": 1024}, args.batch_size)
        via_hf = evaluate("hf", {"pretrained": folder, "dtype": "float32", "device": "cpu", "max_length": 1024},
                          args.batch_size)
    report(via_api, via_hf)


if __name__ == "__main__":
    main()
