"""`nima.builders.load_weights`: a model folder's weights against its spec, every mismatch one `WeightsError`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nima.builders import build_model, load_weights, save_build
from nima.builders.weights import WeightsError
from nima.spec import spec_from_dict

SPEC = {
    "name": "w",
    "vocab_size": 32,
    "max_seq_len": 16,
    "d_model": 16,
    "n_layers": 1,
    "attention": {"n_heads": 2},
    "ffn": {"kind": "gelu", "hidden": 32},
    "position": {"kind": "learned"},
}


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.bool])
def test_integer_weights_are_refused(dtype: torch.dtype, tmp_path: Path) -> None:
    """A tensor stored as integers (a relabelled header, a quantized file) would be cast to weights of no
    meaning: refused by name, from the header, before any is loaded."""
    spec = spec_from_dict(SPEC)
    folder = save_build(build_model(spec, seed=0), spec, tmp_path / "model")
    tensors = load_file(str(folder / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].to(dtype)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match=f"tensor '{name}' holds .*; weights are floating point"):
        load_weights(build_model(spec), folder / "model.safetensors")


def test_float_weights_load(tmp_path: Path) -> None:
    spec = spec_from_dict(SPEC)
    model = build_model(spec, seed=3)
    folder = save_build(model, spec, tmp_path / "model")
    loaded = load_weights(build_model(spec, seed=4), folder / "model.safetensors")
    pairs = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
