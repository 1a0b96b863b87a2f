"""Spec fields several architectures map alike, both ways: the FFN's activation, the head size, RoPE's scaling."""

from __future__ import annotations

from typing import Any

from nima.interop.hf.config import HfConfig
from nima.spec import ModelSpec

# transformers' activation names -> the spec's FFN fields (gated: the kind with a gate)
ACTIVATIONS: dict[str, dict[str, Any]] = {
    "silu": {"kind": "silu"},
    "swish": {"kind": "silu"},
    "gelu": {"kind": "gelu", "approximate": "none"},
    "gelu_new": {"kind": "gelu", "approximate": "tanh"},
    "gelu_pytorch_tanh": {"kind": "gelu", "approximate": "tanh"},
    "relu": {"kind": "relu"},
}
GATED = {"gelu": "geglu", "relu": None, "silu": "swiglu"}
UNGATED = {"gelu": "gelu", "relu": "relu", "silu": "silu"}


def activation(config: HfConfig, key: str, gated: bool, default: str) -> dict[str, Any]:
    """The FFN section's kind (and GELU form) for the config's activation name."""
    name = str(config.get(key, default))
    fields = ACTIVATIONS.get(name)
    kind = None if fields is None else (GATED if gated else UNGATED)[fields["kind"]]
    if fields is None or kind is None:
        raise config.refuse(key, f"activation {name!r} is not supported here")
    return {**fields, "kind": kind}


def activation_name(spec: ModelSpec, tanh: str) -> str:
    """transformers' name for the spec's activation; ``tanh``: the name the family uses for GELU's tanh form."""
    if spec.ffn.kind in ("gelu", "geglu"):
        return tanh if getattr(spec.ffn, "approximate", "none") == "tanh" else "gelu"
    return {"swiglu": "silu", "silu": "silu", "relu": "relu"}.get(spec.ffn.kind, spec.ffn.kind)


def head_dim(config: HfConfig, d_model: int, heads: int) -> dict[str, int]:
    """``attention.head_dim`` where the config's differs from d_model / heads."""
    size = config.integer("head_dim", 0) or d_model // heads
    return {} if size * heads == d_model else {"head_dim": size}


def rope_scaling(config: HfConfig, scaling: dict[str, Any] | None) -> dict[str, Any]:
    """The rope section's scaling fields: linear (``scaling_factor``) and llama3 (``frequency_scaling``);
    every other scaling kind is refused by name."""
    key = "rope_scaling" if "rope_scaling" in config.data else "rope_parameters"
    if scaling is None:
        return {}
    kind = scaling.get("rope_type")
    try:
        if kind == "linear":
            return {"scaling_factor": float(scaling["factor"])}
        if kind == "llama3":
            return {
                "frequency_scaling": {
                    "kind": "llama3",
                    "factor": float(scaling["factor"]),
                    "low_freq_factor": float(scaling["low_freq_factor"]),
                    "high_freq_factor": float(scaling["high_freq_factor"]),
                    "original_max_seq_len": int(scaling["original_max_position_embeddings"]),
                }
            }
    except (KeyError, TypeError, ValueError) as err:
        raise config.refuse(key, f"rope_type {kind!r} without a valid {err}") from None
    raise config.refuse(key, f"rope_type {kind!r} is not supported (Nima's rope takes linear and llama3 scaling)")


def rope_config(spec: ModelSpec) -> dict[str, Any]:
    """RoPE's base and scaling as a config writes them (both spellings: transformers 4 and 5 read them)."""
    theta = getattr(spec.position, "theta", 10000.0)
    factor = getattr(spec.position, "scaling_factor", 1.0)
    frequencies = getattr(spec.position, "frequency_scaling", None)
    scaling: dict[str, Any] | None = {"rope_type": "linear", "factor": factor} if factor != 1.0 else None
    if frequencies is not None:  # a linear factor as well cannot be said: the export's check refuses that
        scaling = {
            "rope_type": "llama3",
            "factor": frequencies.factor,
            "low_freq_factor": frequencies.low_freq_factor,
            "high_freq_factor": frequencies.high_freq_factor,
            "original_max_position_embeddings": frequencies.original_max_seq_len,
        }
    parameters = {"rope_type": "default", "rope_theta": theta} if scaling is None else {**scaling, "rope_theta": theta}
    return {"rope_theta": theta, "rope_scaling": scaling, "rope_parameters": parameters}
