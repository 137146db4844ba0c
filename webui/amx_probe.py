"""Whether llama.cpp's repacked CPU weights run on this machine, found out in a child process.

Some virtual machines advertise AMX in CPUID while their hypervisor does not run it: llama.cpp then moves
quantized weights into its AMX buffer at load, and the first evaluation dies with SIGILL ("Illegal
instruction"), taking the whole server with it. Only a CPU that advertises AMX is at risk, so only there,
once per process, a child process loads a tiny GGUF whose weights take the AMX path and evaluates four
tokens. When it dies of a signal, the llama.cpp loaders load weights in place (llama.cpp's use_extra_bufts
off, as with ``--no-repack``) and the memory estimate leaves the copy out.

``python -m webui.amx_probe`` is the child: it exits 0 when the evaluation ran.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

#: Shapes that llama.cpp's AMX kernels take (Q8_0, in- and out-features multiples of 32).
_HIDDEN, _FFN, _HEADS = 256, 512, 4
_PROBE_TIMEOUT_S = 120.0


def write_probe_gguf(path: Path) -> Path:
    """A one-layer Llama GGUF with Q8_0 weights (random, ~0.7 MB) and a byte-level SentencePiece vocabulary."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(0)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    tokens += [f"<pad{i}>" for i in range(-len(tokens) % 32)]  # the output head's rows: a multiple of 32 too
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((writer.add_context_length, 256), (writer.add_embedding_length, _HIDDEN),
                       (writer.add_block_count, 1), (writer.add_feed_forward_length, _FFN),
                       (writer.add_head_count, _HEADS), (writer.add_head_count_kv, _HEADS),
                       (writer.add_rope_dimension_count, _HIDDEN // _HEADS), (writer.add_layer_norm_rms_eps, 1e-5),
                       (writer.add_vocab_size, len(tokens)), (writer.add_file_type, gguf.LlamaFileType.MOSTLY_Q8_0)):
        add(value)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
                           + [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.UNUSED] * (len(tokens) - 259))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    def matrix(name: str, rows: int, cols: int) -> None:
        data = rng.normal(0, 0.02, (rows, cols)).astype(np.float32)
        quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    writer.add_tensor("token_embd.weight", rng.normal(0, 0.02, (len(tokens), _HIDDEN)).astype(np.float32))
    writer.add_tensor("output_norm.weight", np.ones(_HIDDEN, np.float32))
    matrix("output.weight", len(tokens), _HIDDEN)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(_HIDDEN, np.float32))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(_HIDDEN, np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        matrix(f"blk.0.{name}.weight", _HIDDEN, _HIDDEN)
    matrix("blk.0.ffn_gate.weight", _FFN, _HIDDEN)
    matrix("blk.0.ffn_up.weight", _FFN, _HIDDEN)
    matrix("blk.0.ffn_down.weight", _HIDDEN, _FFN)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def evaluate_probe(path: Path) -> None:
    """Load `path` as llama.cpp does by default (extra buffers on) and evaluate four tokens."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, n_threads=1, n_batch=8, verbose=False)
    try:
        llm.eval([1, 100, 101, 102])
    finally:
        llm.close()


def probe_command() -> list[str]:
    return [sys.executable, "-m", "webui.amx_probe"]


def run_probe(command: list[str] | None = None) -> tuple[bool, str]:
    """(whether the child evaluated, what it said); only a death by signal counts as "does not run": a
    child that fails otherwise (llama.cpp missing, a full disk) says nothing about the CPU."""
    try:
        done = subprocess.run(command or probe_command(), capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S, cwd=Path(__file__).resolve().parent.parent)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return True, f"the probe did not finish ({exc})"
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return False, f"the probe died of {name}"
    if done.returncode:
        return True, f"the probe failed: {done.stderr.strip()[-300:]}"
    return True, "the probe ran"


def amx_advertised() -> bool:
    from webui.cpu_weight_buffers import cpu_features

    return "AMX_INT8" in cpu_features()


@cache
def extra_buffers_run() -> bool:
    """Whether llama.cpp's extra weight buffers (AMX, repack) can be evaluated here; probed once per
    process, and only on a CPU that advertises AMX."""
    if not amx_advertised():
        return True
    runs, said = run_probe()
    if not runs:
        log.warning("llama.cpp's AMX kernels do not run on this CPU (%s): quantized weights are loaded in "
                    "place, as with --no-repack", said)
    elif said != "the probe ran":
        log.info("AMX probe: %s", said)
    return runs


def repack_takes_effect(requested: bool) -> bool:
    """The `repack` loader setting as llama.cpp gets it: on only when asked for and it runs here."""
    return requested and extra_buffers_run()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hearth-amx-probe-") as folder:
        evaluate_probe(write_probe_gguf(Path(folder) / "probe.gguf"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
