"""Small exported models for the runtime tests, and plain PyTorch references to hold the runtime to.

The references run the full forward pass (no cache) at every step, so they share nothing with the
runtime's cached ONNX path but the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizer_support import shakespeare_tokenizer  # noqa: F401 - imported from here by tests
from tokenizers import Tokenizer

from nima.builders import build_model, save_build
from nima.builders.models import DecoderLM
from nima.export.bundle import export_bundle
from nima.runtime import Generator
from nima.runtime.device_rows import DeviceRows
from nima.spec import ModelSpec, spec_from_dict

BASE: dict[str, Any] = {
    "vocab_size": 64,
    "max_seq_len": 128,
    "d_model": 32,
    "n_layers": 2,
    "attention": {"n_heads": 4},
    "init": {"kind": "normal", "std": 0.3},  # wide logits: greedy choices are far from ties
}
FAMILIES: dict[str, dict[str, Any]] = {
    "gpt2": {
        "ffn": {"kind": "gelu", "hidden": 64},
        "position": {"kind": "learned"},
        "norm": {"kind": "layernorm"},
        "bias": True,
        "tie_embeddings": True,
    },
    "llama": {
        "attention": {"n_heads": 4, "n_kv_heads": 2},
        "ffn": {"kind": "swiglu", "hidden": 48},
        "position": {"kind": "rope"},
        "norm": {"kind": "rmsnorm"},
        "bias": False,
        "tie_embeddings": False,
    },
    "alibi": {
        "ffn": {"kind": "relu", "hidden": 64},
        "position": {"kind": "alibi"},
        "norm": {"kind": "layernorm"},
        "bias": False,
        "tie_embeddings": True,
    },
}


def make_spec(family: str, **changes: Any) -> ModelSpec:
    return spec_from_dict({**BASE, "name": f"rt-{family}", **FAMILIES[family], **changes})


def make_bundle(
    spec: ModelSpec, root: Path, tokenizer: Tokenizer | None = None, seed: int = 0
) -> tuple[Path, DecoderLM]:
    """Build seeded weights, export them (no parity check: the export tests own that) and return both."""
    model = build_model(spec, seed=seed)
    source = save_build(model, spec, root / f"{spec.name}-src")
    if tokenizer is not None:
        tokenizer.save(str(source / "tokenizer.json"))
    bundle = root / f"{spec.name}-bundle"
    export_bundle(source, bundle, verify=False)
    return bundle, model.eval()


@torch.no_grad()
def next_logprobs(model: DecoderLM, history: list[int]) -> np.ndarray:
    """log p(. | history) from a full forward pass, float64 (V,)."""
    logits, _ = model(torch.tensor([history]))
    return torch.log_softmax(logits[0, -1].double(), dim=-1).numpy()


@torch.no_grad()
def torch_greedy(
    model: DecoderLM,
    prompt: list[int],
    steps: int,
    repetition_penalty: float = 1.0,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
) -> list[int]:
    """Greedy tokens by full forward passes; the CTRL and OpenAI penalties written out as their formulas."""
    history = list(prompt)
    for _ in range(steps):
        logits, _ = model(torch.tensor([history]))
        last = logits[0, -1].double().clone()
        if repetition_penalty != 1.0:
            for token in set(history):
                value = last[token]
                last[token] = value / repetition_penalty if value > 0 else value * repetition_penalty
        generated = history[len(prompt) :]
        for token in set(generated):
            last[token] -= generated.count(token) * frequency_penalty + presence_penalty
        history.append(int(last.argmax()))
    return history[len(prompt) :]


class CountingRows(DeviceRows):
    """`DeviceRows` on the CPU provider that counts its calls: stands in for a GPU's row selection, so
    the path a CUDA session takes to reorder beams runs (and is shown to run) here."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.calls = 0

    def take(self, value: Any, rows: np.ndarray) -> Any:
        self.calls += 1
        return super().take(value, rows)


def take_rows_on_device(generator: Generator) -> CountingRows:
    """Make ``generator`` select cache rows as it does on a GPU; returns the counter."""
    rows = CountingRows()
    generator.session.rows_on_device = rows
    return rows


class Counting:
    """Counts a session's runs: one per step, however many tokens it checks."""

    def __init__(self, generator: Generator) -> None:
        self.runs = 0
        session = generator.session
        for name in ("step", "step_all"):
            method = getattr(session, name)

            def counted(*args, _method=method, **kwargs):  # noqa: ANN002, ANN003, ANN202
                self.runs += 1
                return _method(*args, **kwargs)

            setattr(session, name, counted)
