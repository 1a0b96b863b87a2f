"""Every example spec validates and builds; derived parameter counts equal the built modules'."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nima.builders import build_model
from nima.spec import PRESETS, figures, load_spec, parameter_count, spec_from_dict

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))

# The guide's table: preset -> (d_model, layers, heads, ffn hidden, parameters)
GUIDE = {
    "tiny": (256, 4, 4, 1024, 10e6),
    "small": (768, 12, 12, 3072, 125e6),
    "medium": (1024, 24, 16, 4096, 350e6),
}


def built_count(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied head shares the embedding's tensor)."""
    return sum(p.numel() for p in model.parameters())


def test_examples_present() -> None:
    names = {p.stem for p in SPECS}
    required = {"gpt2-small", "llama-style", "transformer-base", "t5-small", "alibi", "sliding-window"}
    assert required <= names


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_example_spec_builds_with_exact_parameter_count(path: Path) -> None:
    spec = load_spec(path)
    with torch.device("meta"):  # shapes only: counting needs no memory or init time
        model = build_model(spec)
    assert built_count(model) == parameter_count(spec)
    assert path.read_text().startswith("# yaml-language-server: $schema=../nima.schema.json")


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_example_spec_runs_a_forward_pass(path: Path) -> None:
    """A real build (init included) of a shrunk copy runs forward and gives finite logits."""
    spec = load_spec(path, overrides=["n_layers=1", "vocab_size=128"])
    if spec.is_encoder_decoder:
        spec = load_spec(path, overrides=["n_layers=1", "n_encoder_layers=1", "vocab_size=128"])
    model = build_model(spec, seed=0).eval()
    ids = torch.randint(0, 128, (2, 8))
    with torch.no_grad():
        out = model(ids, ids) if spec.is_encoder_decoder else model(ids)
    assert out[0].shape == (2, 8, 128)
    assert torch.isfinite(out[0]).all()


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_match_the_guide(name: str) -> None:
    spec = spec_from_dict({"extends": name})
    d_model, layers, heads, hidden, params = GUIDE[name]
    assert (spec.d_model, spec.n_layers, spec.attention.n_heads, spec.ffn.hidden) == (d_model, layers, heads, hidden)
    n = parameter_count(spec)
    assert abs(n - params) / params <= 0.10, f"{name}: {n:,} parameters"
    with torch.device("meta"):
        assert built_count(build_model(spec)) == n


def test_gpt2_small_has_gpt2s_parameter_count() -> None:
    """GPT-2 small has 124,439,808 parameters (HF transformers' count for `gpt2`)."""
    assert parameter_count(load_spec(ROOT / "specs" / "gpt2-small.yaml")) == 124_439_808


def test_derived_figures_follow_their_formulas() -> None:
    spec = load_spec(ROOT / "specs" / "llama-style.yaml")
    fig = figures(spec)
    # KV cache: 2 (k, v) x layers x kv heads x head dim x 2 bytes
    assert fig.kv_cache_bytes_per_token_fp16 == 2 * 12 * 4 * 64 * 2
    assert fig.kv_cache_bytes_per_token_fp32 == 2 * fig.kv_cache_bytes_per_token_fp16
    assert fig.training_flops_per_token == 3 * fig.forward_flops_per_token
    norms = (2 * 12 + 1) * 768  # RMSNorm gains: two per block and the final one
    non_embedding = fig.parameters - 2 * 32000 * 768 - norms  # untied: embedding and head
    # 2 FLOPs per matmul weight (head included) + 4 * layers * d_attn * context
    assert fig.forward_flops_per_token == 2 * (non_embedding + 32000 * 768) + 4 * 12 * 768 * 2048
    assert fig.chinchilla_tokens == 20 * fig.parameters
    mem = fig.training_memory_bytes
    assert mem["weights"] == 4 * fig.parameters and mem["optimizer"] == 8 * fig.parameters
    assert mem["total"] == mem["weights"] + mem["gradients"] + mem["optimizer"] + mem["activations"]
