"""A tiny random-weight model for replay tests and CPU runs: built locally, never downloaded.

The model is a 2-layer Qwen2 (hidden 128, 2 heads of 64, 1 KV head: what the vLLM CPU backend
accepts, docs/architecture.md: real parts) whose vocabulary is the project's default tokenizer. Its
tokenizer goes in a directory of its own, without a config.json: transformers 5 rebuilds the
tokenizer of a ``qwen2`` model with Qwen2's pre-tokenizer (single digits), so a server given the
model directory would tokenize differently from the tokenizer.json it ships. ``kvtool`` itself
reads the same tokenizer directory (``--tokenizer``), so both sides render and tokenize
identically.

Building the weights needs torch and transformers, which live in the vLLM environment; the
build runs there (``python`` argument).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kvtool.tokenize import default_tokenizer_path

_BUILD = """
import sys, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
out, vocab = sys.argv[1], int(sys.argv[2])
cfg = Qwen2Config(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                  max_position_embeddings=131072, tie_word_embeddings=True)
torch.manual_seed(0)
Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
"""


@dataclass(frozen=True)
class TinyModel:
    """Where the weights and the tokenizer are."""

    model_dir: Path
    tokenizer_dir: Path


def chat_template() -> str:
    """The tiny model's chat template (deepseek-style markers, tools in the head)."""
    return (resources.files("kvtool.replay") / "tiny_chat_template.jinja").read_text("utf-8")


def build_tiny_model(out: Path, python: str) -> TinyModel:
    """Write the tiny model under ``out`` (``model/`` and ``tokenizer/``) unless it is there."""
    from tokenizers import Tokenizer

    model_dir, tok_dir = out / "model", out / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    source = default_tokenizer_path()
    shutil.copy(source, tok_dir / "tokenizer.json")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<｜begin▁of▁sentence｜>",
        "eos_token": "<｜end▁of▁sentence｜>",
        "model_max_length": 131072,
        "chat_template": chat_template(),
    }
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))
    if not (model_dir / "model.safetensors").exists():
        vocab = Tokenizer.from_file(str(source)).get_vocab_size(with_added_tokens=True)
        subprocess.run(
            [python, "-c", _BUILD, str(model_dir), str(vocab)], check=True, capture_output=True
        )
    return TinyModel(model_dir, tok_dir)
