"""An exported graph on its own, without a runtime around it: one decode step's latency, and its
nodes by op type as exported and as ONNX Runtime runs them.

These are the graph-against-graph figures of bench/genai_compare.py that depend least on the
runtime and on other load on the machine. Sessions use `_harness.THREADS` intra-op threads;
`STEP_ROUNDS` may be changed before timing (``_graphs.STEP_ROUNDS = ...``).
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from pathlib import Path

import _harness
import numpy as np
import onnx
import onnxruntime as ort
from _ort_loops import cpu_session, kv_inputs

# Fused and contrib ops (from genai's builder, Nima's `ort` target or ORT's own session optimisations),
# each standing for a subgraph of standard ops; the op table lists them first.
FUSED_OPS = (
    "GroupQueryAttention",
    "MultiHeadAttention",
    "Attention",
    "RotaryEmbedding",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "FusedMatMul",
    "MatMulNBits",
    "QuickGelu",
    "BiasGelu",
    "FastGelu",
)

STEP_PAST = 128  # cached tokens before the timed single-token steps
STEP_ROUNDS = 60  # rounds; in each, every graph runs one block of steps
STEP_BLOCK = 10  # consecutive timed steps per block, after one untimed step


def step_latency(paths: dict[str, Path], kv_heads: int, head_dim: int) -> dict[str, list[float]]:
    """Per-step ms of each round's block of decode steps, per graph: one new token after `STEP_PAST` cached.

    Each round runs every graph for a block of consecutive steps, as generation does (a graph
    run right after another model finds its weights out of the CPU caches; the untimed first
    step of a block absorbs that), starting with a different graph each round, so order and
    other load on the machine fall on all alike. Sessions do not spin-wait between calls:
    a spinning idle session would take a core from the one being timed. The cache is random: a
    step's cost does not depend on its values.

    The order in which sessions are created moves their speed by several percent (which one
    gains changed with the model's size here; `_harness.time_balanced`), so half the
    rounds run on sessions created in the order of ``paths`` and half on fresh ones created in
    the reverse order. The returned blocks are in round order, first half first, so the same
    index is the same round for every graph.
    """
    labels = list(paths)
    blocks: dict[str, list[float]] = {label: [] for label in labels}
    halves = [(labels, (STEP_ROUNDS + 1) // 2), (labels[::-1], STEP_ROUNDS // 2)]
    for order, rounds in halves:
        runs = [(label, *_step_feed(paths[label], kv_heads, head_dim)) for label in order]
        _time_blocks(runs, rounds, blocks)
        del runs
        gc.collect()  # the sessions' weights go before the next half's are loaded
    return blocks


def _step_feed(
    path: Path, kv_heads: int, head_dim: int
) -> tuple[ort.InferenceSession, dict[str, ort.OrtValue], list[str]]:
    """A non-spinning session of ``path``, its inputs for one step after `STEP_PAST` random cached
    positions, and its output names."""
    rng = np.random.default_rng(_harness.SEED)
    value = ort.OrtValue.ortvalue_from_numpy
    session = cpu_session(path, spin=False)
    feed = {
        "input_ids": value(np.array([[7]], np.int64)),
        "attention_mask": value(np.ones((1, STEP_PAST + 1), np.int64)),
    }
    if any(i.name == "position_ids" for i in session.get_inputs()):
        feed["position_ids"] = value(np.array([[STEP_PAST]], np.int64))
    for name, _ in kv_inputs(session, kv_heads, head_dim):
        cache = rng.standard_normal((1, kv_heads, STEP_PAST, head_dim)).astype(np.float32)
        feed[name] = value(cache)
    return session, feed, [o.name for o in session.get_outputs()]


StepRun = tuple[str, ort.InferenceSession, dict[str, ort.OrtValue], list[str]]  # label, session, feed, outputs


def _time_blocks(runs: list[StepRun], rounds: int, blocks: dict[str, list[float]]) -> None:
    """``rounds`` rounds of one timed block per graph, a different graph first in each round."""
    options = ort.RunOptions()
    for round_ in range(rounds):
        for turn in range(len(runs)):
            label, session, feed, names = runs[(round_ + turn) % len(runs)]
            session.run_with_ort_values(names, feed, options)
            start = time.perf_counter()
            for _ in range(STEP_BLOCK):
                session.run_with_ort_values(names, feed, options)
            blocks[label].append(1000 * (time.perf_counter() - start) / STEP_BLOCK)


def print_step_figures(steps: dict[str, list[float]], base_label: str) -> None:
    """Each graph's median and 10th percentile block, and its per-round ratio to ``base_label``'s.

    The paired ratio compares blocks run back to back in the same round, so a change in the
    machine's speed between rounds (other tenants) cancels; it is the figure to read here.
    """
    base = np.array(steps[base_label])
    for label, spent in steps.items():
        times = np.array(spent)
        line = (
            f"     {label:<12}  median {np.median(times):7.2f} ms ({np.median(base) / np.median(times):.2f}x)"
            f"   10th percentile {np.percentile(times, 10):7.2f} ms"
            f" ({np.percentile(base, 10) / np.percentile(times, 10):.2f}x)"
        )
        if label != base_label:
            ratio = base / times
            low, high = np.percentile(ratio, [25, 75])
            line += (
                f"\n     {'':<12}  per-round ratio: median {np.median(ratio):.3f}x, middle half {low:.3f}-{high:.3f}x,"
                f" faster in {int((ratio > 1).sum())} of {len(ratio)} rounds"
            )
        print(line)


def op_counts(path: Path) -> Counter[str]:
    """Nodes by op type (the main graph; weights are not loaded)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter(node.op_type for node in graph.node)


def ort_optimised(path: Path, out: Path) -> Path:
    """The graph a CPU session runs after ONNX Runtime's own optimisations (level ALL), saved to ``out``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = _harness.THREADS
    options.log_severity_level = 3
    options.optimized_model_filepath = str(out)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", out.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return out


def print_op_table(columns: dict[str, Counter[str]]) -> None:
    """Op types as rows, graphs as columns; fused ops first, then by the largest count."""
    ops = set().union(*columns.values())
    order = sorted(ops, key=lambda op: (op not in FUSED_OPS, -max(c[op] for c in columns.values()), op))
    heads = list(columns)
    width = max(len("op type"), *(len(op) for op in ops))
    print(f"  {'op type':<{width}}  " + "  ".join(f"{h:>{max(len(h), 6)}}" for h in heads))
    for op in order:
        mark = "*" if op in FUSED_OPS else " "
        cells = "  ".join(f"{columns[h][op] or '-':>{max(len(h), 6)}}" for h in heads)
        print(f"{mark} {op:<{width}}  {cells}")
    totals = "  ".join(f"{sum(columns[h].values()):>{max(len(h), 6)}}" for h in heads)
    print(f"  {'total nodes':<{width}}  {totals}")
    print("  (* fused or contrib op)")
