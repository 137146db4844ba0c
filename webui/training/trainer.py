"""The training job: LoRA layers put on the loaded Transformers model, a small AdamW loop, the model restored.

`prepare` runs every check a person can fail (no model or not a Transformers one, dataset, name, resume,
memory) before anything is written or the job starts. `run` then holds the model lock for the whole run, so
generation waits (in arrival order) until training ends. The loop is our own rather than transformers'
Trainer: it checks Stop between steps, reports each step to the job board, saves checkpoints we can resume
and is measured faster on small models (see docs/training.md). When it ends, however it ends, the PEFT
layers are removed (`unload`, no merge) and the model is exactly as it was: same weights, eval mode,
requires_grad flags and cache setting.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webui.dataset_files import datasets_dir
from webui.jobs import MODEL_JOBS, TRAINING_JOB, Job, JobCancelled, JobContext
from webui.training import checkpoints as ckpt
from webui.training.config import TrainingError, TrainingParams, parse_params
from webui.training.datasets import IGNORE, Example, formats_dir, load_examples, resolve_dataset
from webui.training.memory import TrainingMemory, check_fits, estimate_training

if TYPE_CHECKING:
    from webui.app import App

log = logging.getLogger(__name__)

TRANSFORMERS = "Transformers"
#: What PEFT sets on the module it wraps; put back as they were (LoRAs applied by the Model tab use them).
_PEFT_ATTRS = ("peft_config", "_hf_peft_config_loaded")
_MISSING = object()


@dataclass
class Plan:
    """A training that passed every check, ready to run."""

    params: TrainingParams
    model: Any  # the loaded webui Model
    module: Any  # its torch module
    tokenizer: Any
    examples: list[Example]
    eval_examples: list[Example]
    final: Path
    resume: Path | None
    memory: TrainingMemory
    base_model: str = ""
    loras_dir: Path = field(default_factory=Path)


def loaded_torch_model(app: App) -> tuple[Any, Any, Any]:
    """(model, torch module, tokenizer) of the loaded model; TrainingError unless it is a Transformers one."""
    model = app.models.model
    if model is None:
        raise TrainingError(
            "no model is loaded: load a Transformers model (an HF folder) in the Model tab first"
        )
    module = getattr(model, "torch_module", None)
    if app.models.loader_name != TRANSFORMERS or module is None:
        raise TrainingError(
            f"training needs a model loaded with the Transformers loader; {app.models.model_name} is loaded with "
            f"{app.models.loader_name} (GGUF / llama.cpp models cannot be trained: load the original HF folder)"
        )
    if getattr(app.models, "loras", None):
        raise TrainingError(
            "LoRAs are applied to the loaded model: remove them in the Model tab first (training starts from the "
            "base model)"
        )
    return model, module, model.hf_tokenizer


def estimate(app: App, values: dict[str, Any] | TrainingParams) -> TrainingMemory:
    params = values if isinstance(values, TrainingParams) else parse_params(values)
    _, module, _ = loaded_torch_model(app)
    return estimate_training(module, params)


def prepare(app: App, values: dict[str, Any] | TrainingParams) -> Plan:
    params = values if isinstance(values, TrainingParams) else parse_params(values)
    model, module, tokenizer = loaded_torch_model(app)
    name = ckpt.adapter_name(params.name)
    loras = app.settings.loras_dir
    resume = ckpt.resolve_checkpoint(loras, params.resume_from) if params.resume_from.strip() else None
    final = loras / name
    continuing = resume is not None and resume.parent.parent == final
    if final.exists() and not (params.overwrite or continuing):
        raise TrainingError(
            f"an adapter named {name!r} already exists in {loras}: choose another name or tick overwrite"
        )
    if not params.dataset.strip():
        raise TrainingError("dataset: choose a dataset file")
    data_dir, fmt_dir = datasets_dir(app.settings.user_data_dir), formats_dir(app.settings.templates_dir)
    examples = load_examples(resolve_dataset(data_dir, params.dataset), tokenizer, params, fmt_dir)
    eval_examples: list[Example] = []
    if params.eval_dataset.strip():
        path = resolve_dataset(data_dir, params.eval_dataset, "eval_dataset")
        eval_examples = load_examples(path, tokenizer, params, fmt_dir, what="eval_dataset")
    if not any(label != IGNORE for ex in examples for label in ex.labels[1:]):
        raise TrainingError(
            f"dataset {params.dataset!r}: no token to learn (every response was cut by cutoff_len?)"
        )
    memory = estimate_training(module, params)
    check_fits(memory)
    return Plan(
        params.model_copy(update={"name": name}),
        model,
        module,
        tokenizer,
        examples,
        eval_examples,
        final,
        resume,
        memory,
        str(app.models.model_name),
        loras,
    )


def start_training(app: App, values: dict[str, Any] | TrainingParams) -> Job:
    """Check everything, then start the training job (JobBusy when one is running)."""
    app.jobs.ensure_idle(*MODEL_JOBS)
    plan = prepare(app, values)
    return app.jobs.start(TRAINING_JOB, lambda ctx: run(app, plan, ctx), excludes=MODEL_JOBS)


def run(app: App, plan: Plan, ctx: JobContext) -> dict[str, Any]:
    ctx.report(0, message="waiting for the model (a generation may be running)")
    if not app.models.lock.acquire(cancel=ctx.cancel_event):
        raise JobCancelled("training stopped before it started")
    work = None
    try:
        ctx.check()  # Stop while waiting for the model: nothing was trained, nothing is written
        if app.models.model is not plan.model:
            raise TrainingError("the loaded model changed before training started: start it again")
        work = ckpt.new_work_dir(plan.loras_dir, plan.final.name)
        if plan.resume is not None and (plan.resume.parent).is_dir():
            shutil.copytree(plan.resume.parent, work / ckpt.CHECKPOINTS)
        result = train(plan, work, ctx)
        ckpt.move_into_place(work, plan.final)
        work = None
        return {**result, "path": str(plan.final)}
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        app.models.lock.release()


def _batch(examples: list[Example], pad: int, device: Any) -> dict[str, Any]:
    import torch

    width = max(len(ex.input_ids) for ex in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def micro_batches(examples: list[Example], size: int, seed: int, epoch: int) -> list[list[Example]]:
    """One epoch's micro-batches in a seeded order (the same on resume)."""
    import torch

    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return [[examples[i] for i in order[s : s + size]] for s in range(0, len(order), size)]


def total_steps(n_examples: int, params: TrainingParams) -> int:
    per_epoch = math.ceil(n_examples / params.micro_batch_size)
    return max(1, math.ceil(per_epoch * params.epochs / params.gradient_accumulation))


def eval_loss(
    peft_model: Any, examples: list[Example], params: TrainingParams, pad: int, device: Any
) -> float:
    import torch

    peft_model.eval()
    losses = []
    with torch.no_grad():
        for s in range(0, len(examples), params.micro_batch_size):
            losses.append(
                float(peft_model(**_batch(examples[s : s + params.micro_batch_size], pad, device)).loss)
            )
    peft_model.train()
    return sum(losses) / len(losses)


def train(plan: Plan, work: Path, ctx: JobContext) -> dict[str, Any]:
    """The loop; writes the adapter, its parameters and its log into `work`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_scheduler

    params, module = plan.params, plan.module
    saved = {
        "training": module.training,
        "use_cache": getattr(module.config, "use_cache", None),
        "grad": {n: p.requires_grad for n, p in module.named_parameters()},
        "checkpointing": params.gradient_checkpointing,
        "attrs": {attr: module.__dict__.get(attr, _MISSING) for attr in _PEFT_ATTRS},
    }
    device = next(module.parameters()).device
    pad = plan.tokenizer.pad_token_id
    pad = pad if pad is not None else (plan.tokenizer.eos_token_id or 0)
    torch.manual_seed(params.seed)
    config = LoraConfig(
        r=params.rank,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=params.targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(module, config)
    except ValueError as exc:
        raise TrainingError(f"target_modules: {exc}") from None
    try:
        if params.gradient_checkpointing:
            module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        module.config.use_cache = False
        peft_model.train()
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate)
        total = total_steps(len(plan.examples), params)
        scheduler = get_scheduler(
            params.scheduler, optimizer, num_warmup_steps=params.warmup_steps, num_training_steps=total
        )
        history: list[dict[str, float]] = []
        start = 0
        if plan.resume is not None:
            state = ckpt.load_checkpoint(plan.resume, peft_model, optimizer, scheduler)
            start, history = int(state["step"]), list(state.get("history", []))
        result = _loop(plan, peft_model, optimizer, scheduler, work, ctx, start, total, history, pad, device)
        peft_model.save_pretrained(str(work))
        info = {
            **params.model_dump(),
            "base_model": plan.base_model,
            "examples": len(plan.examples),
            "trainable_parameters": sum(p.numel() for p in trainable),
            **result,
        }
        ckpt.write_json(work / "training_parameters.json", info)
        ckpt.write_json(work / "training_log.json", history)
        return result
    finally:
        _restore(peft_model, module, saved)


def _loop(
    plan: Plan,
    peft_model: Any,
    optimizer: Any,
    scheduler: Any,
    work: Path,
    ctx: JobContext,
    start: int,
    total: int,
    history: list[dict[str, float]],
    pad: int,
    device: Any,
) -> dict[str, Any]:
    import torch

    params = plan.params
    per_epoch = math.ceil(len(plan.examples) / params.micro_batch_size)
    epochs: dict[int, list[list[Example]]] = {}
    step, loss, reason, began = start, float("nan"), "done", time.monotonic()

    def state() -> dict[str, Any]:
        return {"step": step, "total": total, "history": history}

    for step in range(start + 1, total + 1):  # noqa: B007 - `step` is read by state() and after the loop
        if ctx.cancelled:
            step -= 1
            reason = "stopped"
            break
        losses = []
        for k in range((step - 1) * params.gradient_accumulation, step * params.gradient_accumulation):
            epoch = k // per_epoch
            if epoch not in epochs:
                epochs = {epoch: micro_batches(plan.examples, params.micro_batch_size, params.seed, epoch)}
            out = peft_model(**_batch(epochs[epoch][k % per_epoch], pad, device))
            (out.loss / params.gradient_accumulation).backward()
            losses.append(float(out.loss.detach()))
        torch.nn.utils.clip_grad_norm_([p for p in peft_model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = sum(losses) / len(losses)
        metrics = {
            "loss": loss,
            "learning_rate": scheduler.get_last_lr()[0],
            "steps_per_s": (step - start) / max(time.monotonic() - began, 1e-9),
        }
        if plan.eval_examples and params.eval_every and step % params.eval_every == 0:
            metrics["eval_loss"] = eval_loss(peft_model, plan.eval_examples, params, pad, device)
        history.append({"step": float(step), **metrics})
        ctx.report(step, total, f"step {step}/{total}: loss {loss:.4f}", **metrics)
        if params.save_every and step % params.save_every == 0:
            ckpt.save_checkpoint(work, step, peft_model, optimizer, scheduler, state())
        if params.stop_at_loss and loss < params.stop_at_loss:
            reason = f"loss {loss:.4f} fell below stop_at_loss {params.stop_at_loss}"
            break
    if plan.eval_examples and not (history and "eval_loss" in history[-1]):  # always measured at the end
        final = eval_loss(peft_model, plan.eval_examples, params, pad, device)
        if history and history[-1]["step"] == step:
            history[-1]["eval_loss"] = final
        else:
            history.append({"step": float(step), "eval_loss": final})
        ctx.report(step, total, eval_loss=final)
    if reason == "stopped" and step > start:  # a resumable checkpoint at the step Stop was pressed
        ckpt.save_checkpoint(work, step, peft_model, optimizer, scheduler, state())
    ctx.report(step, total, f"{reason} at step {step}/{total}; adapter saved to {plan.final}")
    return {"steps": step, "total_steps": total, "final_loss": loss, "ended": reason}


def _restore(peft_model: Any, module: Any, saved: dict[str, Any]) -> None:
    """Remove the LoRA layers (no merge) and put back eval mode, requires_grad, the cache setting and PEFT's
    bookkeeping attributes as they were."""
    peft_model.base_model.unload()
    for attr, value in saved["attrs"].items():
        if value is _MISSING:
            module.__dict__.pop(attr, None)
        else:
            module.__dict__[attr] = value
    if saved["checkpointing"]:
        module.activation_checkpointing_disable()
    for name, param in module.named_parameters():
        param.requires_grad_(saved["grad"].get(name, True))
    module.config.use_cache = saved["use_cache"]
    module.train(saved["training"])
