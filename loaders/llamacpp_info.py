"""What the llama.cpp loader reports about a GGUF model: its ModelInfo, and facts read from its header."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from webui.loader_api import ModelInfo

if TYPE_CHECKING:
    from loaders.llamacpp_media import Projector


def gguf_file_type_name(file_type: int | None) -> str:
    import gguf

    if file_type is None:
        return ""
    try:
        return gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"type {file_type}"


def model_info(
    loader: str, path: Path, gguf_path: Path, llm: Any, projector: Projector | None = None
) -> ModelInfo:
    """The loaded model's facts; `extra` names the projector (mmproj) when images can be sent."""
    from llama_cpp import llama_cpp as capi

    meta = llm.metadata
    arch = meta.get("general.architecture", "unknown")
    file_type = meta.get("general.file_type")
    return ModelInfo(
        name=path.name,
        loader=loader,
        path=str(gguf_path),
        architecture=arch,
        parameters=int(capi.llama_model_n_params(llm._model.model)),
        context_length=llm.n_ctx(),
        vocab_size=llm.n_vocab(),
        quantization=gguf_file_type_name(int(file_type) if file_type is not None else None),
        chat_template=meta.get("tokenizer.chat_template"),
        bos_token=_token_text(llm, llm.token_bos()),
        eos_token=_token_text(llm, llm.token_eos()),
        extra={
            "trained_context_length": int(meta.get(f"{arch}.context_length", 0) or 0),
            "file_size": gguf_path.stat().st_size,
            "vision": projector is not None,
            "projector": projector.path.name if projector is not None else None,
        },
    )


def _token_text(llm: Any, token: int) -> str | None:
    return llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else None


def trained_context(path: Path) -> int:
    """The model's training context from the GGUF header (no tensor data is read)."""
    import gguf

    try:
        reader = gguf.GGUFReader(path, "r")
        arch_field = reader.get_field("general.architecture")
        arch = arch_field.contents() if arch_field else "llama"
        field = reader.get_field(f"{arch}.context_length")
        return int(field.contents()) if field else 0
    except (ValueError, OSError, KeyError):
        return 0
