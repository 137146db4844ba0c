"""Evaluate models from the command line: ``python -m webui.evaluate --models A B --dataset FILE``.

Each model (a name in --models-dir) is loaded with its saved per-model settings, exactly as the Training
tab's evaluation panel does, and scored with sliding windows (--stride, --max-length) on a text file of
``user_data/training/datasets/``. With --reference, every model is also compared with that model (KL
divergence, top-1 agreement). Progress is printed a line per few seconds; results are appended to
``user_data/logs/evaluations.csv`` and printed at the end. Ctrl+C stops the run.
Exit codes: 0 every model evaluated, 1 a model or the run failed, 2 bad input, 130 stopped by Ctrl+C.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from webui.errors import HearthError
from webui.jobs import JobStatus, follow, format_seconds

#: Seconds between progress lines.
PRINT_EVERY = 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webui.evaluate",
        description="Perplexity (and KL divergence "
        "against a reference model) of local models on a text file.",
    )
    parser.add_argument(
        "--models", nargs="+", required=True, help="Models of --models-dir to evaluate, in turn."
    )
    parser.add_argument(
        "--dataset", required=True, help="A text file in user_data/training/datasets/ (its name)."
    )
    parser.add_argument(
        "--stride", type=int, default=512, help="Tokens between window starts (default: 512)."
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=2048,
        help="Tokens per window, at most the model's context (default: 2048).",
    )
    parser.add_argument("--reference", default="", help="Compare every model with this one (KL divergence).")
    parser.add_argument("--comment", default="", help="Saved with the results.")
    parser.add_argument("--models-dir", type=Path, help="Folder of local models (default: models/).")
    parser.add_argument(
        "--user-data-dir", type=Path, help="user_data folder (datasets, per-model settings, logs)."
    )
    return parser


def format_table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [columns, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def main(argv: list[str] | None = None) -> int:
    from webui.app import App
    from webui.config import Settings
    from webui.evaluation import EvaluationRequest, start_evaluation
    from webui.evaluation.results import COLUMNS

    args = build_parser().parse_args(argv)
    settings = Settings(
        **{k: v for k, v in (("models_dir", args.models_dir), ("user_data_dir", args.user_data_dir)) if v}
    )
    request = EvaluationRequest(
        tuple(args.models), args.dataset, args.stride, args.max_length, args.reference, args.comment
    )
    app = App.create(settings)
    try:
        try:
            job = start_evaluation(app, request)
        except HearthError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        last_print = [0.0]

        def show(status: JobStatus) -> None:
            if status.running and time.monotonic() - last_print[0] >= PRINT_EVERY and status.total:
                last_print[0] = time.monotonic()
                ppl = status.metrics.get("perplexity")
                print(
                    f"{status.message}  {status.done}/{status.total} tokens  {status.rate:.0f} tok/s  "
                    f"ETA {format_seconds(status.eta)}" + (f"  perplexity {ppl:.4f}" if ppl else ""),
                    flush=True,
                )

        status, interrupted = follow(
            job, show, on_interrupt=lambda: print("stopping...", file=sys.stderr, flush=True)
        )
        if status.state == "failed":
            print(f"error: {status.error}", file=sys.stderr)
            return 1
        if status.state == "cancelled":
            print("stopped: the models finished before Stop are in the results file", file=sys.stderr)
            return 130 if interrupted else 1
        outcome = status.result
        for notice in outcome.notices:
            print(f"note: {notice}", file=sys.stderr)
        for error in outcome.errors:
            print(f"error: {error}", file=sys.stderr)
        rows = [[row[c] for c in COLUMNS] for row in (r.csv_row() for r in outcome.results)]
        if rows:
            print(format_table(COLUMNS, rows), flush=True)
        return 1 if outcome.errors else 0
    finally:
        app.models.unload()


if __name__ == "__main__":
    raise SystemExit(main())
