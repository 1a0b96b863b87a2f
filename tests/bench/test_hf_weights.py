"""bench/_hf_weights.py: a Nima decoder and its transformers twin compute the same logits.

Skipped where transformers is not installed (it is not a Nima dependency; the benchmark needs it).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from bench_support import load_bench

from nima.builders import build_model
from nima.spec import spec_from_dict

pytest.importorskip("transformers")


hf_weights = load_bench("_hf_weights")

LLAMA: dict[str, Any] = {
    "name": "tiny-llama",
    "vocab_size": 300,
    "max_seq_len": 64,
    "d_model": 64,
    "n_layers": 2,
    "attention": {"n_heads": 4, "n_kv_heads": 2},
    "ffn": {"kind": "swiglu", "hidden": 160},
    "position": {"kind": "rope", "theta": 10000.0},
    "norm": {"kind": "rmsnorm", "placement": "pre", "eps": 1e-6},
    "bias": False,
    "tie_embeddings": False,
}
GPT2: dict[str, Any] = {
    "name": "tiny-gpt2",
    "vocab_size": 300,
    "max_seq_len": 64,
    "d_model": 64,
    "n_layers": 2,
    "attention": {"n_heads": 4},
    "ffn": {"kind": "gelu", "hidden": 256},
    "position": {"kind": "learned"},
    "norm": {"kind": "layernorm", "placement": "pre", "eps": 1e-5},
    "bias": True,
    "tie_embeddings": True,
}


def _logit_diff(data: dict[str, Any]) -> tuple[float, str]:
    """Max |Nima - HF| logits over a batch of random tokens, and the HF class name."""
    spec = spec_from_dict(data)
    model = build_model(spec, seed=0).eval()
    with torch.no_grad():  # norms start at 1 and biases at 0: perturb them so a mix-up would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf = hf_weights.to_hf(model, spec)
    ids = torch.randint(0, spec.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf(ids).logits
    return float((ours - theirs).abs().max()), type(hf).__name__


@pytest.mark.parametrize(
    "overrides",
    [{}, {"tie_embeddings": True, "bias": True}, {"position": {"kind": "rope", "theta": 500.0, "scaling_factor": 4.0}}],
    ids=["untied", "tied-bias", "rope-scaled"],
)
def test_llama_logits_match(overrides: dict[str, Any]) -> None:
    diff, cls = _logit_diff({**LLAMA, **overrides})
    assert cls == "LlamaForCausalLM"
    assert diff < 1e-4


@pytest.mark.parametrize(
    "overrides", [{}, {"bias": False}, {"tie_embeddings": False}], ids=["gpt2", "no-bias", "untied"]
)
def test_gpt2_logits_match(overrides: dict[str, Any]) -> None:
    diff, cls = _logit_diff({**GPT2, **overrides})
    assert cls == "GPT2LMHeadModel"
    assert diff < 1e-4


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"position": {"kind": "alibi"}}, "position.kind is 'alibi'"),
        ({"norm": {"kind": "layernorm", "placement": "post"}}, "pre-norm"),
        ({"attention": {"n_heads": 4, "qk_norm": True}}, "qk_norm"),
    ],
    ids=["alibi", "post-norm", "qk-norm"],
)
def test_unmappable_spec_raises(overrides: dict[str, Any], reason: str) -> None:
    spec = spec_from_dict({**GPT2, **overrides})
    with pytest.raises(ValueError, match="maps onto no transformers class") as err:
        hf_weights.to_hf(build_model(spec, seed=0), spec)
    assert reason in str(err.value)
