"""Spec fields several architectures map alike, both ways: the FFN's activation, the head size, RoPE's scaling."""

from __future__ import annotations

from typing import Any

from nima.interop.hf.config import HfConfig
from nima.spec import ModelSpec

# transformers' activation names -> the spec's FFN fields (gated: the kind with a gate)
ACTIVATIONS: dict[str, dict[str, Any]] = {
    "silu": {"kind": "swiglu"},
    "swish": {"kind": "swiglu"},
    "gelu": {"kind": "gelu", "approximate": "none"},
    "gelu_new": {"kind": "gelu", "approximate": "tanh"},
    "gelu_pytorch_tanh": {"kind": "gelu", "approximate": "tanh"},
    "relu": {"kind": "relu"},
}
GATED = {"gelu": "geglu", "relu": None, "swiglu": "swiglu"}
UNGATED = {"gelu": "gelu", "relu": "relu", "swiglu": None}


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
    return {"swiglu": "silu", "relu": "relu"}.get(spec.ffn.kind, spec.ffn.kind)


def head_dim(config: HfConfig, d_model: int, heads: int) -> dict[str, int]:
    """``attention.head_dim`` where the config's differs from d_model / heads."""
    size = config.integer("head_dim", 0) or d_model // heads
    return {} if size * heads == d_model else {"head_dim": size}


def rope_scaling_factor(config: HfConfig, scaling: dict[str, Any] | None) -> float:
    """RoPE's linear scaling factor; every other scaling kind is refused by name."""
    if scaling is None:
        return 1.0
    kind = scaling.get("rope_type")
    if kind == "linear":
        return float(scaling["factor"])
    raise config.refuse(
        "rope_scaling" if "rope_scaling" in config.data else "rope_parameters",
        f"rope_type {kind!r} is not supported (Nima's rope takes linear scaling)",
    )


def rope_config(spec: ModelSpec) -> dict[str, Any]:
    """RoPE's base and scaling as a config writes them (both spellings: transformers 4 and 5 read them)."""
    theta = getattr(spec.position, "theta", 10000.0)
    factor = getattr(spec.position, "scaling_factor", 1.0)
    scaling = {"rope_type": "linear", "factor": factor} if factor != 1.0 else None
    parameters = {"rope_type": "default", "rope_theta": theta} if scaling is None else {**scaling, "rope_theta": theta}
    return {"rope_theta": theta, "rope_scaling": scaling, "rope_parameters": parameters}
