"""A PEFT LoRA adapter turned into a GGUF adapter for llama.cpp, with llama.cpp's own ``convert_lora_to_gguf.py``.

The converter ships in llama-cpp-python's source distribution (``vendor/llama.cpp``), not in its wheel. It is
looked for in ``$HEARTH_LLAMACPP_SOURCE`` (a llama.cpp checkout), then in Hearth's cache
(``~/.cache/hearth/llama-cpp-python-VERSION``), and otherwise fetched once with
``pip download --no-binary :all: --no-deps llama-cpp-python==VERSION`` (pip answers from its cache when it
can) and the few files the converter needs are unpacked into that cache.

The converter reads the base model's Hugging Face ``config.json`` (``--base``): the adapter's
``base_model_name_or_path`` when that is a local folder, or the folder the GGUF model sits in when it has
one, or else one written from the GGUF model's own metadata (llama, qwen2, qwen3); for another
architecture the converter fetches the config from the Hub itself (its behaviour without ``--base``). The result is written beside the adapter (``hearth-f32.gguf``, atomically) and reused while it is newer
than the adapter's weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from webui.errors import LoaderError

SCRIPT = "convert_lora_to_gguf.py"
CONVERTED = "hearth-f32.gguf"
#: What the converter imports beside itself (paths inside vendor/llama.cpp).
_NEEDED = (SCRIPT, "convert_hf_to_gguf.py", "conversion/", "gguf-py/")
MANUAL = (
    "convert it to a GGUF adapter with llama.cpp's convert_lora_to_gguf.py "
    "(python convert_lora_to_gguf.py --base HF_FOLDER_OF_THE_BASE_MODEL --outtype f32 ADAPTER_FOLDER) "
    "and put the .gguf file in the LoRA folder"
)


def _version() -> str:
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return ""


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hearth" / f"llama-cpp-python-{_version() or 'unknown'}"


def _usable(folder: Path) -> bool:
    return (folder / SCRIPT).is_file() and (folder / "conversion").is_dir()


def _unpack(sdist: Path, target: Path) -> None:
    """The converter's files from the sdist into `target` (written under a temporary name, then renamed)."""
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/", 3)  # llama_cpp_python-X/vendor/llama.cpp/<rest>
            if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"]:
                continue
            rest = parts[3]
            if not any(rest == n or (n.endswith("/") and rest.startswith(n)) for n in _NEEDED):
                continue
            if not (member.isfile() or member.isdir()) or ".." in rest.split("/"):
                continue
            member = member.replace(name=rest)
            tar.extract(member, tmp, filter="data")
    tmp.rename(target)


def find_converter(download: bool = True) -> Path | None:
    """The folder holding ``convert_lora_to_gguf.py`` and what it imports, or None when it cannot be had."""
    env = os.environ.get("HEARTH_LLAMACPP_SOURCE")
    if env and _usable(Path(env)):
        return Path(env)
    target = cache_dir()
    if _usable(target):
        return target
    version = _version()
    if not download or not version:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sdist-", dir=target.parent) as work:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"llama-cpp-python=={version}",
                "-d",
                work,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        sdists = list(Path(work).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 and not sdists:
            return None
        try:
            _unpack(sdists[0], target)
        except (OSError, tarfile.TarError):
            return None
    return target if _usable(target) else None


def _base_name(adapter: Path) -> str | None:
    try:
        base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get(
            "base_model_name_or_path"
        )
    except (OSError, ValueError, AttributeError):
        return None
    return base if isinstance(base, str) and base else None


def base_config_folder(adapter: Path, model_path: Path) -> Path | None:
    """A folder with the base model's config.json, as the converter's ``--base`` expects."""
    base = _base_name(adapter)
    candidates = [Path(base)] if base else []
    candidates.append(model_path if model_path.is_dir() else model_path.parent)
    return next((c for c in candidates if (c / "config.json").is_file()), None)


#: GGUF architecture -> the Hugging Face class and model_type the converter maps back to it.
_HF_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
}


def config_from_gguf(gguf_path: Path, folder: Path) -> Path | None:
    """Write the config.json the converter needs from a GGUF model's own metadata (llama, qwen2, qwen3), into
    `folder`; None for another architecture. Only the shapes matter to a LoRA's conversion."""
    import gguf

    try:
        reader = gguf.GGUFReader(gguf_path, "r")
    except (ValueError, OSError):
        return None

    def value(key: str) -> object:
        field = reader.get_field(key)
        return field.contents() if field is not None else None

    arch = value("general.architecture")
    if arch not in _HF_ARCHITECTURES:
        return None
    cls, model_type = _HF_ARCHITECTURES[str(arch)]
    tokens = value("tokenizer.ggml.tokens")
    config = {
        "architectures": [cls],
        "model_type": model_type,
        "hidden_size": value(f"{arch}.embedding_length"),
        "num_hidden_layers": value(f"{arch}.block_count"),
        "intermediate_size": value(f"{arch}.feed_forward_length"),
        "num_attention_heads": value(f"{arch}.attention.head_count"),
        "num_key_value_heads": value(f"{arch}.attention.head_count_kv")
        or value(f"{arch}.attention.head_count"),
        "max_position_embeddings": value(f"{arch}.context_length"),
        "rms_norm_eps": value(f"{arch}.attention.layer_norm_rms_epsilon") or 1e-6,
        "rope_theta": value(f"{arch}.rope.freq_base") or 10000.0,
        "vocab_size": value(f"{arch}.vocab_size") or (len(tokens) if isinstance(tokens, list) else None),
    }
    if value(f"{arch}.attention.key_length"):
        config["head_dim"] = value(f"{arch}.attention.key_length")
    if any(v is None for v in config.values()):
        return None
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def converted_path(adapter: Path) -> Path:
    return adapter / CONVERTED


def convert_peft_adapter(adapter: Path, model_path: Path) -> Path:
    """The GGUF version of the PEFT adapter folder `adapter` (converted now, or earlier and still current).

    The base model's config comes from a local folder (`base_config_folder`), else from the GGUF model's
    metadata (`config_from_gguf`), else the converter fetches it from the Hub by the adapter's
    ``base_model_name_or_path`` (its own behaviour without ``--base``; needs the network)."""
    out = converted_path(adapter)
    weights = [
        adapter / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (adapter / n).is_file()
    ]
    if out.is_file() and all(out.stat().st_mtime >= w.stat().st_mtime for w in weights):
        return out
    converter = find_converter()
    if converter is None:
        raise LoaderError(
            f"LoRA {adapter.name} is a PEFT adapter and llama.cpp needs a GGUF adapter; llama.cpp's "
            f"converter could not be found or downloaded: {MANUAL}"
        )
    tmp = adapter / f".{CONVERTED}.incomplete"
    with tempfile.TemporaryDirectory(prefix="hearth-lora-base-") as scratch:
        base = base_config_folder(adapter, model_path)
        if base is None and model_path.is_file():
            base = config_from_gguf(model_path, Path(scratch))
        if base is None and _base_name(adapter) is None:
            raise LoaderError(
                f"LoRA {adapter.name} is a PEFT adapter and llama.cpp needs a GGUF adapter; converting it needs "
                f"the base model's config.json, which neither the adapter nor the model gives: {MANUAL}"
            )
        command = [
            sys.executable,
            str(converter / SCRIPT),
            "--outtype",
            "f32",
            "--outfile",
            str(tmp),
            str(adapter),
        ]
        done = subprocess.run(
            command + (["--base", str(base)] if base else []),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    if done.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise LoaderError(f"LoRA {adapter.name}: convert_lora_to_gguf.py failed ({tail}); {MANUAL}")
    tmp.replace(out)
    return out
