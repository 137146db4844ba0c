"""Train a LoRA from the command line: ``python -m webui.train --model NAME --dataset FILE --name ADAPTER``.

The model is loaded with the Transformers loader through the App's model manager, exactly as the UI does;
every training parameter is a flag generated from `TrainingParams` (``--help`` lists them with their
descriptions). Progress is printed a line per report; Ctrl+C stops the run and still saves the adapter.
Exit codes: 0 done (or stopped at --stop-at-loss), 1 failed, 2 bad input, 130 stopped by Ctrl+C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from webui.errors import HearthError
from webui.jobs import JobStatus, follow, format_seconds
from webui.param_specs import ParamSpec
from webui.training.config import training_specs

#: Shown as positional-like flags first; the rest of TrainingParams follow.
_ARG_TYPES = {"int": int, "float": float, "str": str}


def _add(parser: argparse.ArgumentParser, spec: ParamSpec) -> None:
    flag = "--" + spec.name.replace("_", "-")
    if spec.kind == "bool":
        parser.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, help=spec.help)
        return
    extra = {"choices": list(spec.choices)} if spec.choices else {}
    parser.add_argument(
        flag,
        dest=spec.name,
        type=_ARG_TYPES.get(spec.kind, str),
        help=f"{spec.help} (default: {spec.default})",
        **extra,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webui.train",
        description="Train a LoRA adapter on a Transformers model.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--model",
        required=True,
        help="Model to train on: a folder of --models-dir or a path to an HF folder.",
    )
    parser.add_argument("--models-dir", type=Path, help="Folder of local models (default: models/).")
    parser.add_argument(
        "--lora-dir", dest="loras_dir", type=Path, help="Where adapters are saved (default: loras/)."
    )
    parser.add_argument(
        "--user-data-dir", type=Path, help="user_data folder (datasets are in its training/datasets/)."
    )
    parser.add_argument(
        "--dtype", choices=("auto", "float32", "bfloat16", "float16"), help="Weight dtype at load."
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="Where to train.")
    for spec in training_specs().values():
        _add(parser, spec)
    return parser


def main(argv: list[str] | None = None) -> int:
    from webui.app import App
    from webui.config import Settings
    from webui.training import start_training
    from webui.training.memory import describe
    from webui.training.trainer import estimate

    args = vars(build_parser().parse_args(argv))
    settings = Settings(**{k: args.pop(k) for k in ("models_dir", "loras_dir", "user_data_dir") if k in args})
    load_params = {k: args.pop(k) for k in ("dtype", "device") if k in args}
    model = args.pop("model")
    app = App.create(settings)
    try:
        try:
            app.models.load_path(model, "Transformers", load_params)
            print(describe(estimate(app, args)).replace("**", ""), flush=True)
            job = start_training(app, args)
        except HearthError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        printed = [-1]

        def show(status: JobStatus) -> None:
            if status.done != printed[0] and status.metrics:
                printed[0] = status.done
                loss = status.metrics.get("loss", float("nan"))
                print(
                    f"step {status.done}/{status.total}  loss {loss:.4f}  {status.rate:.2f} steps/s  "
                    f"ETA {format_seconds(status.eta)}",
                    flush=True,
                )

        status, interrupted = follow(
            job,
            show,
            poll=1.0,
            on_interrupt=lambda: print("stopping: saving the adapter...", file=sys.stderr, flush=True),
        )
        if status.state == "failed":
            print(f"error: {status.error}", file=sys.stderr)
            return 1
        print(status.message, flush=True)
        return 130 if interrupted else 0
    finally:
        app.models.unload()


if __name__ == "__main__":
    raise SystemExit(main())
