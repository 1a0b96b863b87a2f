"""Export benchmark: for each preset, target and dtype, export time, file size, node counts by op
type, and one-token decode latency of the graph in ONNX Runtime (batch 1, 128 cached tokens, 2 threads;
the graphs of a preset take turns in blocks of steps, so drifting load falls on all alike).

    .venv/bin/python bench/export.py [--presets tiny small] [--targets portable ort] [--dtypes fp32 fp16 int8 int4]

Node counts are of the graph as written; ORT fuses more when a session loads it.

Weights are seeded random (init std 0.02); speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from nima.builders import build_model
from nima.export.quantize import quantize
from nima.export.targets.ort.export import export_for_ort
from nima.export.targets.portable import export_portable
from nima.spec import spec_from_dict

PAST, THREADS, RUNS, BLOCK = 128, 2, 20, 5
NP_DTYPES = {"fp16": np.float16}


def _step(path: Path, spec, dtype: str) -> tuple[ort.InferenceSession, dict[str, np.ndarray]]:  # noqa: ANN001
    """A session on ``path`` and the feeds of one decode step: one new token after `PAST` cached."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    # an idle session spin-waiting for work would take a core from the one being timed
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    kv = NP_DTYPES.get(dtype, np.float32)
    feeds = {
        "input_ids": np.array([[7]], np.int64),
        "attention_mask": np.ones((1, PAST + 1), np.int64),
        "position_ids": np.array([[PAST]], np.int64),
    }
    rng = np.random.default_rng(0)
    for i in range(spec.n_layers):
        for name in ("key", "value"):
            shape = (1, spec.n_kv_heads, PAST, spec.head_dim)
            feeds[f"past_key_values.{i}.{name}"] = rng.standard_normal(shape).astype(kv)
    return session, feeds


def decode_latency_ms(paths: dict[str, Path], spec, dtypes: dict[str, str]) -> dict[str, float]:  # noqa: ANN001
    """Median ms of one decode step for each graph in ``paths``.

    The graphs take turns in blocks of `BLOCK` consecutive steps (after one untimed step), each
    round starting with a different graph, so drifting load on the machine falls on all alike.
    """
    steps = {key: _step(path, spec, dtypes[key]) for key, path in paths.items()}
    keys = list(steps)
    blocks: dict[str, list[float]] = {key: [] for key in keys}
    for round_ in range(RUNS):
        for turn in range(len(keys)):
            key = keys[(round_ + turn) % len(keys)]
            session, feeds = steps[key]
            session.run(None, feeds)
            start = time.perf_counter()
            for _ in range(BLOCK):
                session.run(None, feeds)
            blocks[key].append(1000 * (time.perf_counter() - start) / BLOCK)
    return {key: statistics.median(times) for key, times in blocks.items()}


def export(model, spec, path: Path, dtype: str, target: str) -> None:  # noqa: ANN001 - DecoderLM, ModelSpec
    """The graph of ``target`` in ``dtype`` (fp32 or fp16) at ``path``."""
    if target == "ort":
        export_for_ort(model, spec, path, dtype=dtype)
    else:
        export_portable(model, spec, path, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--targets", nargs="+", default=["portable", "ort"], choices=["portable", "ort"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "fp16", "int8", "int4"])
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    rows = []
    ops_by_model = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            spec = spec_from_dict({"extends": preset})
            model = build_model(spec, seed=0).eval()
            paths: dict[str, Path] = {}
            exported: dict[str, tuple[float, float, int]] = {}
            for target in args.targets:
                fp32_path = None
                for dtype in args.dtypes:
                    key = f"{target} {dtype}"
                    path = Path(tmp) / preset / target / dtype / "model.onnx"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    start = time.perf_counter()
                    if dtype in ("int8", "int4"):
                        if fp32_path is None:
                            fp32_path = Path(tmp) / preset / target / "fp32-src" / "model.onnx"
                            fp32_path.parent.mkdir(parents=True, exist_ok=True)
                            export(model, spec, fp32_path, "fp32", target)
                        quantize(fp32_path, path, dtype)
                    else:
                        export(model, spec, path, dtype, target)
                        if dtype == "fp32":
                            fp32_path = path
                    seconds = time.perf_counter() - start
                    size = sum(f.stat().st_size for f in path.parent.iterdir())
                    graph = onnx.load(str(path), load_external_data=False).graph
                    ops_by_model[(preset, key)] = collections.Counter(n.op_type for n in graph.node)
                    paths[key] = path
                    exported[key] = (seconds, size / 2**20, len(graph.node))
                    print(f"{preset} {key}: exported", flush=True)
            latency = decode_latency_ms(paths, spec, {key: key.split()[1] for key in paths})
            for key, (seconds, mib, nodes) in exported.items():
                target, dtype = key.split()
                rows.append((preset, target, dtype, seconds, mib, nodes, latency[key]))
    print()
    head = f"{'export s':>9} {'MiB':>8} {'nodes':>6} {'decode ms/token':>16} {'tokens/s':>9}"
    print(f"{'preset':8} {'target':8} {'dtype':6} {head}")
    for preset, target, dtype, seconds, mib, nodes, latency in rows:
        figures = f"{seconds:9.1f} {mib:8.1f} {nodes:6d} {latency:16.2f} {1000 / latency:9.1f}"
        print(f"{preset:8} {target:8} {dtype:6} {figures}")
    print(
        f"\n(one new token after {PAST} cached, batch 1, {THREADS} threads; median over {RUNS} blocks of {BLOCK} steps,"
        " the graphs of a preset taking turns)\n"
    )
    for (preset, key), ops in ops_by_model.items():
        top = ", ".join(f"{op} {n}" for op, n in ops.most_common(12))
        print(f"{preset} {key} ops: {top}")


if __name__ == "__main__":
    main()
