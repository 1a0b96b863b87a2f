"""What the portable graph's packed projections and grouped queries buy: decode speed against the model's own graph.

`nima export` writes the portable graph from a packed copy of the model (`nima.export.targets.portable`:
one MatMul for q, k and v, one for a gated FFN's gate and up, grouped-query attention without
repeating the cache). This script exports the same seeded weights both ways, the second with the
packing switched off, and times greedy decoding with Nima's runtime, the two bundles taking turns
(2 threads, fp32; both must give the same tokens):

  llama-tiny     decoder-only, the LLaMA-style tiny model of bench/_models.py (GQA 4/2, SwiGLU, rope)
  seq2seq-gqa    encoder-decoder, 4 + 4 layers, d_model 256, GQA 4/2, SwiGLU, T5 relative bias
  seq2seq-t5     the same with 4 kv heads (no grouping) and a ReLU FFN: only q, k and v are packed

    .venv/bin/python bench/packing.py [--models ...] [--rounds N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _harness import THREADS, log
from _models import SIZES

import nima.export.seq2seq.graph as seq2seq_graph
import nima.export.targets.portable as packed_model
from nima.builders import build_model, save_build
from nima.export.bundle import export_bundle
from nima.runtime import Generator
from nima.spec import spec_from_dict

SEQ2SEQ: dict[str, Any] = {
    "architecture": "encoder-decoder",
    "vocab_size": 8192,
    "max_seq_len": 256,
    "d_model": 256,
    "n_layers": 4,
    "n_encoder_layers": 4,
    "position": {"kind": "relative", "num_buckets": 32, "max_distance": 128},
    "norm": {"kind": "rmsnorm"},
}
MODELS: dict[str, dict[str, Any]] = {
    "llama-tiny": SIZES["tiny"],
    "seq2seq-gqa": {
        **SEQ2SEQ,
        "name": "bench-s2s-gqa",
        "attention": {"n_heads": 4, "n_kv_heads": 2},
        "ffn": {"kind": "swiglu", "hidden": 688},
    },
    "seq2seq-t5": {
        **SEQ2SEQ,
        "name": "bench-s2s-t5",
        "attention": {"n_heads": 4},
        "ffn": {"kind": "relu", "hidden": 1024},
    },
}
PROMPT, NEW = 32, 96


def unpacked_export(source: Path, out: Path) -> Path:
    """`export_bundle` with the packing switched off: the model's own graph."""
    real = packed_model.packed_for_export
    plain = lambda model: copy.deepcopy(model).eval()  # noqa: E731 - a stand-in for one call
    packed_model.packed_for_export = seq2seq_graph.packed_for_export = plain
    try:
        return export_bundle(source, out, force=True).out
    finally:
        packed_model.packed_for_export = seq2seq_graph.packed_for_export = real


def bench(name: str, root: Path, rounds: int) -> None:
    spec = spec_from_dict({**MODELS[name], "generation": {"do_sample": False}})
    log(f"{name}: build + export, packed and not")
    source = save_build(build_model(spec, seed=0).eval(), spec, root / name / "model")
    bundles = {
        "own graph": unpacked_export(source, root / name / "plain"),
        "packed": export_bundle(source, root / name / "packed", force=True).out,
    }
    generators = {label: Generator(path, threads=THREADS) for label, path in bundles.items()}
    prompt = np.random.default_rng(0).integers(3, spec.vocab_size, PROMPT).tolist()
    key = "sources" if spec.architecture == "encoder-decoder" else "prompts"
    speed: dict[str, list[float]] = {label: [] for label in generators}
    tokens: dict[str, list[int]] = {}
    for round_ in range(rounds + 1):  # the first round warms up
        order = list(generators) if round_ % 2 else list(generators)[::-1]
        for label in order:
            start = time.perf_counter()
            result = generators[label].generate(**{key: [prompt]}, max_new_tokens=NEW, min_new_tokens=NEW)[0]
            if round_:
                speed[label].append(NEW / (time.perf_counter() - start))
            tokens[label] = result.token_ids
    base, packed = (np.array(speed[label]) for label in bundles)
    low, high = np.percentile(packed / base, [25, 75])
    same = "yes" if len({tuple(t) for t in tokens.values()}) == 1 else "NO"
    print(
        f"| {name} | {statistics.median(base):.1f} | {statistics.median(packed):.1f} | "
        f"{np.median(packed / base):.3f}x ({low:.3f}-{high:.3f}) | {same} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=16, help="timed rounds per model, alternating (median)")
    args = parser.parse_args(argv)
    print(f"# Greedy decode, {PROMPT}-token prompt or source, {NEW} new tokens, fp32, {THREADS} threads\n")
    print("| model | own graph tok/s | packed tok/s | packed / own, per round: median (middle half) | same tokens |")
    print("|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            bench(name, Path(tmp), args.rounds)


if __name__ == "__main__":
    main()
