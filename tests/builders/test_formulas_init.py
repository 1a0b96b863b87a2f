"""Weight initialisation of built models against the schemes' stated statistics.

``normal`` (GPT-2): every linear weight and embedding ~ Normal(0, std), except the residual
output projections (attention ``o_proj`` and the FFN ``down``), ~ Normal(0, std / sqrt(2 L)).
``xavier`` (Glorot & Bengio 2010): linear weights ~ U(+-gain sqrt(6 / (fan_in + fan_out))), so
variance gain^2 * 2 / (fan_in + fan_out); embeddings ~ Normal(0, d_model^-1/2). Both: zero
biases, unit norm gains. The models are wide enough that sample statistics are within ~1%.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from nima.builders import build_model
from nima.spec import spec_from_dict

D_MODEL, N_LAYERS = 256, 4


def spec_dict(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "vocab_size": 512,
        "max_seq_len": 64,
        "d_model": D_MODEL,
        "n_layers": N_LAYERS,
        "attention": {"n_heads": 4},
        "ffn": {"kind": "gelu", "hidden": 1024},
        "position": {"kind": "learned"},
        "norm": {"kind": "layernorm"},
        "bias": True,
        "tie_embeddings": False,
        "init": {"kind": "normal", "std": 0.02, "scaled_residual": True},
    }
    base.update(changes)
    return base


def is_residual_projection(name: str) -> bool:
    """Named by position in the model, not by the flag the builders set."""
    return name.endswith("attention.o_proj") or name.endswith("ffn.down")


def sample_std(w: torch.Tensor) -> float:
    """Root mean square about zero (the schemes have zero mean)."""
    return math.sqrt(float((w.double() ** 2).mean()))


def check_norms_and_biases(model: nn.Module) -> int:
    """Linear biases are zero; norm gains are one and norm biases zero. Returns norms seen."""
    norms = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0, name
        elif "norm" in type(module).__name__.lower():
            norms += 1
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
            if getattr(module, "bias", None) is not None:
                assert torch.count_nonzero(module.bias) == 0, name
    return norms


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ffn": {"kind": "swiglu", "hidden": 1024}, "norm": {"kind": "rmsnorm"}, "bias": False},
        {"init": {"kind": "normal", "std": 0.05, "scaled_residual": False}, "tie_embeddings": True},
    ],
    ids=["gpt2", "llama", "unscaled-tied"],
)
def test_normal_init_statistics(changes: dict[str, Any]) -> None:
    """Normal(0, std); residual projections std / sqrt(2 n_layers) when scaled_residual."""
    spec = spec_from_dict(spec_dict(**changes))
    model = build_model(spec, seed=0)
    std = spec.init.std
    residual_std = std / math.sqrt(2 * N_LAYERS) if spec.init.scaled_residual else std
    seen = {"residual": 0, "other": 0}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            w = module.weight.detach()
            want = residual_std if is_residual_projection(name) else std
            seen["residual" if is_residual_projection(name) else "other"] += 1
            assert sample_std(w) == pytest.approx(want, rel=0.03), name
            assert abs(float(w.double().mean())) < 4 * want / math.sqrt(w.numel()), name
    assert seen["residual"] == 2 * N_LAYERS  # o_proj and ffn.down in every block
    assert seen["other"] > 2 * N_LAYERS
    assert check_norms_and_biases(model) == 2 * N_LAYERS + 1  # two per block plus the final norm


@pytest.mark.parametrize("tie", [False, True])
def test_xavier_init_statistics(tie: bool) -> None:
    """|W| <= gain sqrt(6 / (in + out)) and Var W = gain^2 2 / (in + out); embeddings d^-1/2."""
    gain = 1.5
    spec = spec_from_dict(spec_dict(init={"kind": "xavier", "gain": gain}, tie_embeddings=tie))
    model = build_model(spec, seed=0)
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    linears = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            assert sample_std(module.weight.detach()) == pytest.approx(D_MODEL**-0.5, rel=0.03), name
        elif isinstance(module, nn.Linear) and id(module.weight) not in embedding_ids:
            linears += 1
            fan_out, fan_in = module.weight.shape
            w = module.weight.detach()
            assert float(w.abs().max()) <= gain * math.sqrt(6 / (fan_in + fan_out)) + 1e-7, name
            assert float(w.double().var()) == pytest.approx(gain**2 * 2 / (fan_in + fan_out), rel=0.05), name
    assert linears == 6 * N_LAYERS + (0 if tie else 1)  # q, k, v, o, up, down per block (+ untied head)
    check_norms_and_biases(model)


def test_seed_reproducible() -> None:
    """Same seed: identical weights. Different seed: different weights. Global RNG untouched."""
    spec = spec_from_dict(spec_dict(d_model=32, ffn={"kind": "gelu", "hidden": 64}))
    rng_before = torch.get_rng_state()
    a, b, c = build_model(spec, seed=7), build_model(spec, seed=7), build_model(spec, seed=8)
    assert torch.equal(torch.get_rng_state(), rng_before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    random_keys = [k for k in sa if k.endswith("weight") and sa[k].ndim == 2]
    assert random_keys
    for key in random_keys:
        assert not torch.equal(sa[key], sc[key]), key
