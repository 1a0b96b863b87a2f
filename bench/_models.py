"""The models the benchmarks measure, as spec dictionaries, and building and exporting one.

`SIZES` are the LLaMA-style shapes onnxruntime-genai's builder takes (bench/genai_compare.py);
`MODELS` adds GPT-2-style twins from Nima's presets, by the names the decode benchmarks take on
their command lines (``--models llama-tiny ...``). Weights are always seeded random: speed does
not depend on their values.

Importing this module loads no torch (bench/processes.py's runtime processes import none);
`export_model` loads Nima's builders and exporter when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _harness import SEED

from nima.spec import PRESETS, ModelSpec, spec_from_dict

_LLAMA: dict[str, Any] = {
    "architecture": "decoder",
    "max_seq_len": 2048,
    "position": {"kind": "rope", "theta": 10000.0},
    "norm": {"kind": "rmsnorm", "placement": "pre", "eps": 1e-6},
    "bias": False,
    "init": {"kind": "normal", "std": 0.02},
}
SIZES: dict[str, dict[str, Any]] = {
    # ~9.2M parameters: the tiny preset's shape, LLaMA style, tied head
    "tiny": {
        **_LLAMA,
        "name": "bench-tiny",
        "vocab_size": 24576,
        "d_model": 256,
        "n_layers": 4,
        "attention": {"n_heads": 4, "n_kv_heads": 2},
        "ffn": {"kind": "swiglu", "hidden": 688},
        "tie_embeddings": True,
    },
    # ~124.7M parameters: specs/llama-style.yaml, untied head
    "small": {
        **_LLAMA,
        "name": "bench-small",
        "vocab_size": 32000,
        "d_model": 768,
        "n_layers": 12,
        "attention": {"n_heads": 12, "n_kv_heads": 4},
        "ffn": {"kind": "swiglu", "hidden": 2048},
        "tie_embeddings": False,
    },
}
MODELS: dict[str, dict[str, Any]] = {
    "llama-tiny": SIZES["tiny"],
    "gpt2-tiny": {**PRESETS["tiny"], "name": "bench-gpt2-tiny"},
    "llama-small": SIZES["small"],
    "gpt2-small": {**PRESETS["small"], "name": "bench-gpt2-small"},
    # ~1.1B parameters, TinyLlama-1.1B's shape (bench/import.py's large case: 4.4 GB of fp32 weights)
    "llama-1b": {
        **_LLAMA,
        "name": "bench-1b",
        "vocab_size": 32000,
        "d_model": 2048,
        "n_layers": 22,
        "attention": {"n_heads": 32, "n_kv_heads": 4},
        "ffn": {"kind": "swiglu", "hidden": 5632},
        "tie_embeddings": False,
    },
}


def export_model(data: dict[str, Any], folder: Path, seed: int = SEED, **options: Any) -> tuple[Path, ModelSpec]:
    """The spec ``data`` with weights seeded by ``seed``, saved to ``folder``/model and exported to
    ``folder``/bundle with `export_bundle`'s keyword ``options``; returns the bundle and the spec."""
    from nima.builders import build_model, save_build
    from nima.export.bundle import export_bundle

    spec = spec_from_dict(data)
    source = save_build(build_model(spec, seed=seed).eval(), spec, folder / "model")
    return export_bundle(source, folder / "bundle", **options).out, spec
