"""KV-cache bytes per token of a model (docs/architecture.md, "Tiers and cost").

Standard attention: 2 x layers x kv_heads x head_dim x dtype bytes. MLA (DeepSeek V2/V3):
layers x (kv_lora_rank + qk_rope_head_dim) x dtype bytes. ``head_dim`` from the config when present,
else hidden_size / num_attention_heads. ``lookup`` reads only local files and the built-in table
(nothing is fetched) and raises ``NotFoundError`` for a model it does not know, ``InputError``
for a file that is not a JSON model config (its shape numbers must be positive integers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kvtool.errors import InputError, NotFoundError

GPU_TFLOPS = 989.0  # H100 SXM dense bf16
MFU = 0.4  # a typical prefill model-FLOPs utilization
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1, "float8": 1, "int8": 1}


@dataclass(frozen=True)
class KVShape:
    """The KV-relevant shape of a model; ``bytes_per_token`` is what one cached token costs."""

    name: str
    layers: int
    kv_heads: int = 0
    head_dim: int = 0
    dtype_bytes: int = 2
    mla_dim: int = 0  # kv_lora_rank + qk_rope_head_dim for MLA models, else 0
    active_params_b: float = 0.0  # parameters used per token, billions (0: unknown)

    def prefill_tps(self, gpu_tflops: float = GPU_TFLOPS, mfu: float = MFU) -> float | None:
        """A prefill throughput estimate (tokens/s): ``mfu`` of the GPU's dense bf16 FLOP/s over
        2 FLOPs per active parameter per token; None when the parameter count is unknown."""
        if not self.active_params_b:
            return None
        return mfu * gpu_tflops * 1e12 / (2 * self.active_params_b * 1e9)

    @property
    def bytes_per_token(self) -> int:
        if self.mla_dim:
            return self.layers * self.mla_dim * self.dtype_bytes
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


# Published configs (config.json of each model), bf16; active parameters from the model cards
# (DeepSeek-V3/R1: 37 B of 671 B are active per token).
BUILTIN: dict[str, KVShape] = {
    s.name.lower(): s
    for s in (
        KVShape("Llama-3.1-8B", 32, 8, 128, active_params_b=8.0),
        KVShape("Llama-3.1-70B", 80, 8, 128, active_params_b=70.6),
        KVShape("Llama-3.1-405B", 126, 8, 128, active_params_b=405.8),
        KVShape("Llama-3.2-1B", 16, 8, 64, active_params_b=1.24),
        KVShape("Llama-3.2-3B", 28, 8, 128, active_params_b=3.21),
        KVShape("Llama-3.3-70B", 80, 8, 128, active_params_b=70.6),
        KVShape("Mistral-7B", 32, 8, 128, active_params_b=7.25),
        KVShape("Qwen2.5-7B", 28, 4, 128, active_params_b=7.6),
        KVShape("Qwen2.5-14B", 48, 8, 128, active_params_b=14.7),
        KVShape("Qwen2.5-32B", 64, 8, 128, active_params_b=32.5),
        KVShape("Qwen2.5-72B", 80, 8, 128, active_params_b=72.7),
        KVShape("Qwen3-8B", 36, 8, 128, active_params_b=8.2),
        KVShape("Qwen3-14B", 40, 8, 128, active_params_b=14.8),
        KVShape("Qwen3-32B", 64, 8, 128, active_params_b=32.8),
        KVShape("DeepSeek-V3", 61, mla_dim=512 + 64, active_params_b=37.0),
        KVShape("DeepSeek-R1", 61, mla_dim=512 + 64, active_params_b=37.0),
    )
}


def _positive(cfg: dict, key: str, name: str, default: object = None) -> int:
    """``cfg[key]`` (or ``default`` when absent or null) as a positive integer; ``InputError``
    naming the key otherwise."""
    value = cfg.get(key)
    if value is None:
        value = default
    if value is None:
        raise InputError(f"{name}: is not a model config (no {key})")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InputError(f"{name}: {key} must be a positive integer, got {str(value)[:40]!r}")
    if value <= 0:
        raise InputError(f"{name}: {key} must be a positive integer, got {value}")
    return int(value)


def from_config(config: dict, name: str = "config") -> KVShape:
    """KV shape from a Hugging Face config.json mapping; ``InputError`` (naming ``name`` and the
    key) unless every shape number it uses is a positive integer."""
    cfg = config.get("text_config", config) if isinstance(config, dict) else config
    if not isinstance(cfg, dict):
        raise InputError(f"{name}: is not a model config (a JSON object)")
    layers = _positive(cfg, "num_hidden_layers", name)
    dtype = _DTYPE_BYTES.get(str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"), 2)
    if cfg.get("kv_lora_rank"):
        rank = _positive(cfg, "kv_lora_rank", name)
        rope = _positive(cfg, "qk_rope_head_dim", name, 0) if cfg.get("qk_rope_head_dim") else 0
        return KVShape(name, layers, dtype_bytes=dtype, mla_dim=rank + rope)
    heads = _positive(cfg, "num_attention_heads", name)
    kv_heads = _positive(cfg, "num_key_value_heads", name, heads)
    if cfg.get("head_dim") is not None:
        head_dim = _positive(cfg, "head_dim", name)
    else:
        head_dim = _positive(cfg, "hidden_size", name) // heads
        if head_dim <= 0:
            raise InputError(f"{name}: hidden_size is smaller than num_attention_heads")
    return KVShape(name, layers, kv_heads, head_dim, dtype)


def _read_config(path: Path, name: str) -> dict:
    """The parsed JSON object of a config file; ``InputError`` for unreadable or non-JSON."""
    try:
        config = json.loads(path.read_bytes())
    except OSError as exc:
        raise InputError(f"{name}: cannot be read ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{name}: is not a JSON model config") from exc
    if not isinstance(config, dict):
        raise InputError(f"{name}: is not a model config (a JSON object)")
    return config


def lookup(model: str) -> KVShape:
    """KV shape for a config.json path, a model directory, or a built-in name (case-insensitive,
    an ``org/`` prefix and ``-Instruct``-style suffixes ignored). ``NotFoundError`` for an
    unknown name, ``InputError`` for a file that is not a JSON model config."""
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return from_config(_read_config(path, model), model)
    key = model.rsplit("/", 1)[-1].lower()
    if key in BUILTIN:
        return BUILTIN[key]
    for name in sorted(BUILTIN, key=len, reverse=True):  # longest known name that prefixes it
        if key.startswith(name + "-") or key.startswith(name + "."):
            return BUILTIN[name]
    raise NotFoundError(
        f"unknown model {model!r}: pass a config.json path or one of "
        + ", ".join(s.name for s in BUILTIN.values())
    )
