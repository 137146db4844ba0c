"""Builds small random Llama models for tests and benchmarks, with no download.

One set of weights is written twice: as a Hugging Face folder (config.json, model.safetensors, a byte-level
BPE tokenizer) and as a GGUF file carrying the same tokenizer, so both engines can be compared token
for token. Head dimension is 64: llama.cpp 0.3.x fails to find KV slots with tiny head dimensions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CORPUS = """
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Hello, world! How are you today? I am fine, thank you. What would you like to talk about?
Once upon a time there was a little village by the sea, where fishermen told stories every night.
The model reads tokens and predicts the next one. Sampling picks a token from the probabilities.
User: Tell me a story about a dragon.
Assistant: Long ago, a dragon lived in the mountains and guarded a library of ancient books.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Symbols: : ; , . ! ? ( ) [ ] { } " ' * - + = / \\
Привет, как дела? Это тест для кириллицы. 你好，世界。 Emoji: 🙂 🚀
"""
SPECIALS = ["<unk>", "<s>", "</s>"]


@dataclass(frozen=True)
class TinyConfig:
    hidden: int = 128
    heads: int = 2
    kv_heads: int = 1
    layers: int = 2
    intermediate: int = 256
    context: int = 1024
    vocab: int = 512
    init_std: float = 0.2
    seed: int = 1234
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5


def build_tokenizer(vocab_size: int):
    """A byte-level BPE trained on a small corpus (every byte is representable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([CORPUS] * 20, trainer=trainer)
    return tok


def random_weights(cfg: TinyConfig, vocab: int) -> dict[str, np.ndarray]:
    """HF-named float32 weights with a large init so greedy choices are decisive (no near-ties)."""
    rng = np.random.default_rng(cfg.seed)
    head_dim = cfg.hidden // cfg.heads

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * cfg.init_std).astype(np.float32)

    weights = {"model.embed_tokens.weight": w(vocab, cfg.hidden), "model.norm.weight": np.ones(cfg.hidden, np.float32),
               "lm_head.weight": w(vocab, cfg.hidden)}
    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": np.ones(cfg.hidden, np.float32),
            p + "post_attention_layernorm.weight": np.ones(cfg.hidden, np.float32),
            p + "self_attn.q_proj.weight": w(cfg.heads * head_dim, cfg.hidden),
            p + "self_attn.k_proj.weight": w(cfg.kv_heads * head_dim, cfg.hidden),
            p + "self_attn.v_proj.weight": w(cfg.kv_heads * head_dim, cfg.hidden),
            p + "self_attn.o_proj.weight": w(cfg.hidden, cfg.heads * head_dim),
            p + "mlp.gate_proj.weight": w(cfg.intermediate, cfg.hidden),
            p + "mlp.up_proj.weight": w(cfg.intermediate, cfg.hidden),
            p + "mlp.down_proj.weight": w(cfg.hidden, cfg.intermediate),
        }
    return weights


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<s>' + message['role'] + '\\n' + message['content'] + '</s>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant\\n' }}{% endif %}"
)


def write_hf_folder(path: Path, cfg: TinyConfig, tokenizer, weights: dict[str, np.ndarray]) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = tokenizer.get_vocab_size()
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.hidden,
        "intermediate_size": cfg.intermediate, "num_attention_heads": cfg.heads, "num_key_value_heads": cfg.kv_heads,
        "num_hidden_layers": cfg.layers, "max_position_embeddings": cfg.context, "vocab_size": vocab,
        "rms_norm_eps": cfg.rms_eps, "rope_theta": cfg.rope_theta, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32", "hidden_act": "silu",
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: torch.from_numpy(v) for k, v in weights.items()}, str(path / "model.safetensors"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return path


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half Q/K layout to GGUF's interleaved one (as llama.cpp's converter does)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, cfg: TinyConfig, tokenizer, weights: dict[str, np.ndarray], name: str = "tiny-llama",
               vocab: int | None = None, split_max_tensors: int = 0) -> Path:
    """Write the weights as an F32 GGUF. `vocab` larger than the tokenizer's pads it with unused tokens.
    `split_max_tensors`: write a split GGUF (`NAME-00001-of-0000N.gguf`, ...) with at most that many tensors
    per shard, as gguf-split does; the first shard's path is returned."""
    import gguf

    vocab = vocab or tokenizer.get_vocab_size()
    writer = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    writer.add_name(name)
    writer.add_context_length(cfg.context)
    writer.add_embedding_length(cfg.hidden)
    writer.add_block_count(cfg.layers)
    writer.add_feed_forward_length(cfg.intermediate)
    writer.add_rope_dimension_count(cfg.hidden // cfg.heads)
    writer.add_head_count(cfg.heads)
    writer.add_head_count_kv(cfg.kv_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_eps)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    id_to_token = {i: t for t, i in tokenizer.get_vocab().items()}
    real = tokenizer.get_vocab_size()
    tokens = [id_to_token[i] if i < real else f"<unused_{i}>" for i in range(vocab)]
    writer.add_token_list(tokens)
    types = [gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.USER_DEFINED if i >= real
             else gguf.TokenType.NORMAL for i, t in enumerate(tokens)]
    writer.add_token_types(types)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)
    for hf_name, array in weights.items():
        writer.add_tensor(_gguf_name(hf_name), _to_gguf(hf_name, array, cfg))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        return next(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))
    return path


def _gguf_name(hf_name: str) -> str:
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    if hf_name in fixed:
        return fixed[hf_name]
    parts = hf_name.split(".")
    layer, rest = parts[2], ".".join(parts[3:])
    mapping = {
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
    }
    return f"blk.{layer}.{mapping[rest]}"


def _to_gguf(hf_name: str, array: np.ndarray, cfg: TinyConfig) -> np.ndarray:
    if hf_name.endswith("q_proj.weight"):
        return _permute(array, cfg.heads)
    if hf_name.endswith("k_proj.weight"):
        return _permute(array, cfg.kv_heads)
    return array


def build_pair(root: Path, cfg: TinyConfig = TinyConfig()) -> tuple[Path, Path]:
    """The same random model as models/tiny-llama (HF folder) and models/tiny-llama.gguf (F32)."""
    tokenizer = build_tokenizer(cfg.vocab)
    weights = random_weights(cfg, tokenizer.get_vocab_size())
    hf = write_hf_folder(root / "tiny-llama", cfg, tokenizer, weights)
    gguf_path = write_gguf(root / "tiny-llama.gguf", cfg, tokenizer, weights)
    return hf, gguf_path


#: About 0.25B parameters with a 32k vocabulary: the size the benchmarks measure (decode ~25 ms/token on 2 cores).
BENCH_CONFIG = TinyConfig(hidden=1024, heads=16, kv_heads=4, layers=16, intermediate=2816, context=4096, vocab=512, init_std=0.02)


def build_bench_gguf(root: Path, quant: str = "Q8_0", vocab: int = 32000, cfg: TinyConfig = BENCH_CONFIG) -> Path:
    """A realistic-size random GGUF, quantized with llama.cpp's own quantizer; cached in `root`."""
    import llama_cpp

    out = root / f"bench-{quant}.gguf"
    if out.exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(cfg.vocab)
    f32 = write_gguf(root / "bench-F32.gguf", cfg, tokenizer, random_weights(cfg, vocab), name="bench", vocab=vocab)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")  # Q8_0, Q4_K_M, Q6_K, IQ4_NL, ...
    if llama_cpp.llama_model_quantize(str(f32).encode(), str(out).encode(), params) != 0:
        raise RuntimeError("llama.cpp failed to quantize the benchmark model")
    f32.unlink()
    return out


def build_bench_hf(root: Path, vocab: int = 32000, cfg: TinyConfig = BENCH_CONFIG) -> Path:
    """The benchmark shape as an HF folder (F32 safetensors, like build_pair's); cached in `root`.

    The embedding and head have `vocab` rows, as in build_bench_gguf; the tokenizer knows only the first
    cfg.vocab of them, which is enough for benchmarks that feed token ids. Written under a temporary name
    and renamed, so an interrupted build is never taken for a finished one.
    """
    out = root / "bench-hf"
    if (out / "config.json").is_file():
        return out
    partial = root / "bench-hf.partial"
    write_hf_folder(partial, cfg, build_tokenizer(cfg.vocab), random_weights(cfg, vocab))
    config = json.loads((partial / "config.json").read_text())
    (partial / "config.json").write_text(json.dumps({**config, "vocab_size": vocab}, indent=2))
    partial.rename(out)
    return out


def make_peft_adapter(base: Path, out: Path, seed: int = 0) -> Path:
    """A LoRA on every linear layer of `base`, with random non-zero lora_B so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(out)
    return out
