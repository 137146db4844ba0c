"""The parameters of one LoRA training, typed and validated once; the Training tab and the CLI are built
from the same fields (their descriptions are the tooltips and the ``--help`` lines)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webui.errors import HearthError
from webui.param_specs import ParamSpec, specs_from

SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")


class TrainingError(HearthError):
    """Training cannot start or go on as asked (no model, a bad dataset, an unsafe or taken name, no memory)."""


class TrainingParams(BaseModel):
    """One training run. Field order is the order of the UI and of ``--help``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="Name of the adapter: it is saved to loras/NAME/.")
    dataset: str = Field(
        "", description="Training data: a file in user_data/training/datasets/ (.txt, .json, .jsonl)."
    )
    format: str = Field(
        "auto",
        description="How records become text: auto (.txt raw; records with 'messages' the chat template; "
        "else alpaca), raw, chat, or a format of templates/training_formats/.",
    )
    eval_dataset: str = Field(
        "", description="Optional evaluation data (same folder); its loss is measured every eval_every steps."
    )
    rank: int = Field(
        8,
        ge=1,
        le=1024,
        description="LoRA rank r: size of the low-rank update; more learns more and takes more memory.",
    )
    alpha: int = Field(
        16, ge=1, le=4096, description="LoRA alpha: the update is scaled by alpha/rank (commonly 2x rank)."
    )
    dropout: float = Field(0.05, ge=0.0, le=0.9, description="Dropout on the LoRA input during training.")
    target_modules: str = Field(
        "all-linear",
        description="Layers that get a LoRA: all-linear (every linear layer but the output head), or names "
        "separated by commas (q_proj,v_proj).",
    )
    learning_rate: float = Field(3e-4, gt=0.0, description="Peak learning rate of AdamW.")
    scheduler: Literal[SCHEDULERS] = Field(
        "linear", description="How the learning rate changes after warmup."
    )  # type: ignore[valid-type]
    warmup_steps: int = Field(
        0, ge=0, le=100_000, description="Steps over which the learning rate rises from 0."
    )
    epochs: float = Field(3.0, gt=0.0, le=1000.0, description="Passes over the dataset (fractions allowed).")
    micro_batch_size: int = Field(
        4, ge=1, le=1024, description="Sequences per forward pass; memory grows with it."
    )
    gradient_accumulation: int = Field(
        1, ge=1, le=1024, description="Micro-batches per optimizer step (batch = micro-batch x this)."
    )
    cutoff_len: int = Field(
        256, ge=8, le=131_072, description="Tokens per training sequence; longer records are cut."
    )
    overlap_len: int = Field(
        32, ge=0, le=131_072, description="Raw text: tokens shared by consecutive chunks."
    )
    train_on_inputs: bool = Field(
        False, description="Formatted records: also learn the prompt (default: loss only on the response)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: far less memory, about 30% slower."
    )
    save_every: int = Field(
        0, ge=0, le=1_000_000, description="Save a checkpoint every N steps (0: only at the end)."
    )
    eval_every: int = Field(
        0, ge=0, le=1_000_000, description="Measure the evaluation loss every N steps (0: only at the end)."
    )
    stop_at_loss: float = Field(
        0.0, ge=0.0, le=100.0, description="Stop once the training loss falls below this (0: never)."
    )
    resume_from: str = Field(
        "",
        description="Continue a stopped run: an adapter in loras/ (its latest checkpoint) or ADAPTER/step-N.",
    )
    overwrite: bool = Field(False, description="Replace an existing adapter of the same name.")
    seed: int = Field(
        42, ge=0, le=2**31 - 1, description="Seed of LoRA initialisation, dropout and data order."
    )

    @property
    def targets(self) -> str | list[str]:
        """`target_modules` as PEFT takes it."""
        text = self.target_modules.strip()
        if text in ("", "all-linear", "all_linear", "all"):
            return "all-linear"
        return [part.strip() for part in text.split(",") if part.strip()]


def training_specs() -> dict[str, ParamSpec]:
    """The fields as ParamSpecs (widgets, CLI flags)."""
    return specs_from(TrainingParams)


def parse_params(values: dict[str, Any]) -> TrainingParams:
    """Validated params; a bad field is a TrainingError naming it."""
    try:
        return TrainingParams.model_validate(values)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'parameters'}: {e['msg']}" for e in exc.errors()]
        raise TrainingError("; ".join(parts)) from None
