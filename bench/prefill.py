"""Prefill time with every position's logits against the last position's only (``logits_to_keep``).

For each model (bench/_models.py's list, seeded random weights, exported to ``--target``) and
each prompt length, one ONNX Runtime session runs the same left-aligned prompt through the
prefill two ways, alternating: without ``logits_to_keep`` (its default 0: the contract's
[batch, seq, vocab] logits, what onnxruntime-genai asks for) and with ``logits_to_keep = 1``
(what Nima's runtime feeds). Each way's median over ``--rounds`` is printed with their ratio;
the last position's logits are checked equal first, so the two runs compute the same answer.

    cd bench && ../.venv/bin/python prefill.py
    cd bench && ../.venv/bin/python prefill.py --models llama-tiny --prompts 32 512 --batch 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from _harness import SEED, THREADS
from _models import MODELS, export_model

from nima.layout import LOGITS, LOGITS_TO_KEEP, MODEL_FILE
from nima.spec import ModelSpec


def prefill_feed(spec: ModelSpec, batch: int, length: int) -> dict[str, np.ndarray]:
    """A random prompt of ``length`` tokens per row, no padding, and an empty cache."""
    ids = np.random.default_rng(SEED).integers(0, spec.vocab_size, (batch, length))  # (B, T)
    feed = {
        "input_ids": ids,
        "attention_mask": np.ones((batch, length), dtype=np.int64),
        "position_ids": np.tile(np.arange(length, dtype=np.int64), (batch, 1)),
    }
    empty = np.zeros((batch, spec.n_kv_heads, 0, spec.head_dim), dtype=np.float32)  # (B, H_kv, 0, hd)
    for i in range(spec.n_layers):
        feed[f"past_key_values.{i}.key"] = feed[f"past_key_values.{i}.value"] = empty
    return feed


def time_prefill(bundle: Path, spec: ModelSpec, batch: int, length: int, rounds: int) -> tuple[float, float]:
    """Median seconds of a prefill making every position's logits, and making the last position's only."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    session = ort.InferenceSession(str(bundle / MODEL_FILE), options, providers=["CPUExecutionProvider"])
    if LOGITS_TO_KEEP not in {arg.name for arg in session.get_overridable_initializers()}:
        raise SystemExit(f"{bundle}: the graph has no {LOGITS_TO_KEEP} input (exported before it existed)")
    every = prefill_feed(spec, batch, length)
    last = {**every, LOGITS_TO_KEEP: np.array(1, dtype=np.int64)}
    full = session.run([LOGITS], every)[0]  # (B, T, V); also the warm-up
    kept = session.run([LOGITS], last)[0]  # (B, 1, V)
    if kept.shape != (batch, 1, full.shape[-1]) or not np.allclose(kept[:, 0], full[:, -1], atol=1e-5):
        raise SystemExit(f"{bundle}: the kept logits differ from the last position's")
    times: dict[str, list[float]] = {"every": [], "last": []}
    for r in range(rounds):
        order = [("every", every), ("last", last)]
        for name, feed in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            session.run([LOGITS], feed)
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["every"]), statistics.median(times["last"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["llama-tiny", "gpt2-tiny", "llama-small", "gpt2-small"])
    parser.add_argument("--target", choices=["ort", "portable"], default="ort", help="the bundle's export target")
    parser.add_argument("--prompts", nargs="+", type=int, default=[32, 256], help="prompt lengths")
    parser.add_argument("--batch", type=int, default=1, help="prompts per prefill")
    parser.add_argument("--rounds", type=int, default=30, help="alternating timed prefills of each kind")
    args = parser.parse_args(argv)
    print(f"prefill, {args.target} bundles, batch {args.batch}, {THREADS} threads, median of {args.rounds}")
    print(f"{'model':<12} {'prompt':>6} {'every position ms':>18} {'last only ms':>13} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="nima-prefill-") as scratch:
        for name in args.models:
            # seeded random weights, exported unverified
            bundle, spec = export_model(MODELS[name], Path(scratch) / name, target=args.target, verify=False)
            for length in args.prompts:
                every, last = time_prefill(bundle, spec, args.batch, length, args.rounds)
                print(f"{name:<12} {length:>6} {every * 1e3:>18.2f} {last * 1e3:>13.2f} {every / last:>5.2f}x")


if __name__ == "__main__":
    main()
