"""How much memory a LoRA training takes, before it starts, against what the model's device has free.

Training memory = weights (already loaded) + LoRA parameters with their gradients and AdamW's two moments
(float32: 16 bytes a parameter) + activations kept for the backward pass + the logits of a micro-batch.

Activations, per token and per decoder layer, for a Llama-style block (values at the model's dtype):
what autograd keeps of the norms, q/k/v and their rotated copies, attention, the residuals and the MLP
(gate, up, act(gate), their product) comes to about 12 h + 4 kv + 5 ffn, plus for each LoRA its dropout
output (its in_features) and its rank-r projection. With gradient checkpointing only each block's input
(h) is kept, and one block's activations live again while it is recomputed. The logits cost about 10
float32 values a vocabulary entry a token (the logits, their shifted copy, the log-softmax, and the
gradient of each). These factors were fitted to the peak RSS growth of CPU training runs (8 layers, hidden
512, vocabulary 8000; micro-batch 4 x 128/256/512 tokens, with and without checkpointing): the estimate is
0.73-0.91 of what was measured (glibc keeps freed blocks), hence `HEADROOM` when deciding what fits.

Full fine-tuning needs about 4x the weights (weights, gradients, two AdamW moments): the rule of thumb
the Training tab quotes; LoRA trains a fraction of a percent of the parameters, so its share is small.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from webui.memory_estimate import CUDA_RESERVE, MiB, available_memory
from webui.training.config import TrainingError, TrainingParams

#: Bytes per trainable LoRA parameter: the float32 value, its gradient and AdamW's two moments.
BYTES_PER_TRAINABLE = 16
#: Autograd's and the allocator's own memory beyond the tensors counted (fitted, see the module docstring).
FIXED_OVERHEAD = 200 * MiB
#: Float32 values per vocabulary entry per token for the logits and the loss (fitted).
LOGIT_COPIES = 10
#: Training starts only when the estimate times this fits: the estimate measured 0.73-0.91 of the real growth.
HEADROOM = 1.25


@dataclass(frozen=True)
class TrainingMemory:
    weights: int
    lora_params: int  # count, not bytes
    lora_state: int  # bytes: values, gradients, optimizer moments
    activations: int
    overhead: int
    available: int
    device: str

    @property
    def total(self) -> int:
        return self.weights + self.lora_state + self.activations + self.overhead

    @property
    def extra(self) -> int:
        """What training needs beyond the already loaded weights."""
        return self.total - self.weights

    @property
    def full_finetune(self) -> int:
        """The seed's rule: full training takes about 4x the model's memory."""
        return 4 * self.weights

    @property
    def fits(self) -> bool:
        return self.extra * HEADROOM <= self.available

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total, "extra": self.extra, "full_finetune": self.full_finetune}


def _is_target(name: str, module: Any, targets: str | list[str], output_names: set[str]) -> bool:
    import torch

    if not isinstance(module, torch.nn.Linear):
        return False
    if targets == "all-linear":
        return name not in output_names
    return name.rsplit(".", 1)[-1] in targets


def lora_targets(module: Any, targets: str | list[str]) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of every linear layer that gets a LoRA."""
    output = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    output_names = {n for n, m in module.named_modules() if m is output}
    return [
        (n, m.in_features, m.out_features)
        for n, m in module.named_modules()
        if _is_target(n, m, targets, output_names)
    ]


def estimate_training(module: Any, params: TrainingParams) -> TrainingMemory:
    """The estimate for the loaded torch `module` and the training `params` (see the module docstring)."""
    config = module.config.get_text_config()
    first = next(module.parameters())
    per_value = first.element_size()
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    weights += sum(b.numel() * b.element_size() for b in module.buffers())
    targets = lora_targets(module, params.targets)
    if not targets:
        raise TrainingError(f"target_modules {params.target_modules!r} matches no linear layer of the model")
    lora_params = sum(params.rank * (i + o) for _, i, o in targets)
    h = int(config.hidden_size)
    layers = int(config.num_hidden_layers)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    head_dim = int(getattr(config, "head_dim", None) or h // heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads) * head_dim
    ffn = int(getattr(config, "intermediate_size", 4 * h))
    lora_per_layer = sum((i if params.dropout > 0 else 0) + params.rank for _, i, _ in targets) // max(
        layers, 1
    )
    block = 12 * h + 4 * kv + 5 * ffn + lora_per_layer  # values per token kept by one block
    tokens = params.micro_batch_size * params.cutoff_len
    kept = tokens * (layers * h + block) if params.gradient_checkpointing else tokens * layers * block
    logits = tokens * int(config.vocab_size) * 4 * LOGIT_COPIES
    activations = kept * per_value + logits
    on_gpu = first.device.type == "cuda"
    free = available_memory()
    available = free["vram_free"] if on_gpu else free["ram_available"]
    overhead = FIXED_OVERHEAD + (CUDA_RESERVE if on_gpu else 0)
    return TrainingMemory(
        weights,
        lora_params,
        lora_params * BYTES_PER_TRAINABLE,
        activations,
        overhead,
        int(available),
        first.device.type,
    )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / MiB:.1f} MiB"


def describe(mem: TrainingMemory) -> str:
    """Markdown for the Training tab and the CLI."""
    verdict = "fits" if mem.fits else "**does not fit**"
    return (
        f"Training memory on {mem.device}: **{_gib(mem.total)}** = weights {_gib(mem.weights)} (loaded) + "
        f"LoRA {mem.lora_params:,} parameters with gradients and AdamW state {_gib(mem.lora_state)} + "
        f"activations {_gib(mem.activations)} + overhead {_gib(mem.overhead)}. "
        f"Needs {_gib(mem.extra)} more; {_gib(mem.available)} free: {verdict}. "
        f"(Full fine-tuning would take about 4x the model: {_gib(mem.full_finetune)}.)"
    )


def check_fits(mem: TrainingMemory) -> None:
    if not mem.fits:
        raise TrainingError(
            f"training needs about {_gib(mem.extra)} more memory on {mem.device} ({_gib(int(mem.extra * HEADROOM))} "
            f"with a safety margin) but only {_gib(mem.available)} is free: lower micro_batch_size or cutoff_len, turn on gradient_checkpointing, or lower the rank"
        )
