"""Export benchmark: for each preset, target and dtype, export time, file size, node counts by op
type, and one-token decode latency of the graph in ONNX Runtime (batch 1, 128 cached tokens, 2 threads).

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
from nima.export.fuse import export_for_ort
from nima.export.onnx_graph import export_decoder
from nima.export.quantize import quantize
from nima.spec import spec_from_dict

PAST, THREADS, RUNS = 128, 2, 30
NP_DTYPES = {"fp16": np.float16}


def decode_latency_ms(path: Path, spec, dtype: str) -> float:  # noqa: ANN001 - ModelSpec
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
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
    for _ in range(3):
        session.run(["logits"], feeds)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def export(model, spec, path: Path, dtype: str, target: str) -> None:  # noqa: ANN001 - DecoderLM, ModelSpec
    """The graph of ``target`` in ``dtype`` (fp32 or fp16) at ``path``."""
    if target == "ort":
        export_for_ort(model, spec, path, dtype=dtype)
    else:
        export_decoder(model, spec, path, dtype=dtype)


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
            for target in args.targets:
                fp32_path = None
                for dtype in args.dtypes:
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
                    ops_by_model[(preset, target, dtype)] = collections.Counter(n.op_type for n in graph.node)
                    latency = decode_latency_ms(path, spec, dtype)
                    rows.append((preset, target, dtype, seconds, size / 2**20, len(graph.node), latency))
                    print(f"{preset} {target} {dtype}: done", flush=True)
    print()
    head = f"{'export s':>9} {'MiB':>8} {'nodes':>6} {'decode ms/token':>16} {'tokens/s':>9}"
    print(f"{'preset':8} {'target':8} {'dtype':6} {head}")
    for preset, target, dtype, seconds, mib, nodes, latency in rows:
        figures = f"{seconds:9.1f} {mib:8.1f} {nodes:6d} {latency:16.2f} {1000 / latency:9.1f}"
        print(f"{preset:8} {target:8} {dtype:6} {figures}")
    print(f"\n(one new token after {PAST} cached, batch 1, {THREADS} threads, median of {RUNS})\n")
    for (preset, target, dtype), ops in ops_by_model.items():
        top = ", ".join(f"{op} {n}" for op, n in ops.most_common(12))
        print(f"{preset} {target} {dtype} ops: {top}")


if __name__ == "__main__":
    main()
