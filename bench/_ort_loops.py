"""Python decode loops straight over ONNX Runtime sessions, as `Runner`s (bench/_harness.py).

They run an exported graph with nothing of a runtime around it: the presents of one step go back
as the pasts of the next, numpy arrays (`ort_numpy_runner`) or OrtValues (`ort_ortvalue_runner`,
no numpy round trip). Against onnxruntime-genai on the same graph they separate what the graph
costs from what the runtime around it adds. Sessions use `_harness.THREADS` intra-op threads.
"""

from __future__ import annotations

import time
from pathlib import Path

import _harness
import numpy as np
import onnxruntime as ort
from _harness import Runner, Timing


def cpu_session(path: Path, spin: bool = True) -> ort.InferenceSession:
    """A CPU session of ``path`` on `_harness.THREADS` threads; ``spin=False`` stops idle threads
    spin-waiting, so a session between calls takes no core from another being timed."""
    options = ort.SessionOptions()
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = _harness.THREADS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def kv_inputs(session: ort.InferenceSession, kv_heads: int, head_dim: int) -> list[tuple[str, tuple[int, ...]]]:
    """The past key/value inputs, each with its empty first-step shape (1, kv_heads, 0, head_dim)."""
    names = [meta.name for meta in session.get_inputs() if meta.name.startswith("past_key_values.")]
    return [(name, (1, kv_heads, 0, head_dim)) for name in names]


def ort_numpy_runner(label: str, path: Path, kv_heads: int, head_dim: int) -> Runner:
    """A Python loop over ``session.run``: numpy in, numpy out, the presents fed back as the pasts."""
    session = cpu_session(path)
    kv = kv_inputs(session, kv_heads, head_dim)
    names = [o.name for o in session.get_outputs()]
    has_positions = any(i.name == "position_ids" for i in session.get_inputs())

    def run(prompt: list[int], new_tokens: int) -> Timing:
        start = time.perf_counter()
        ids = np.array([prompt], dtype=np.int64)
        past = {name: np.zeros(dims, np.float32) for name, dims in kv}
        seen = 0
        tokens: list[int] = []
        ttft = 0.0
        for step in range(new_tokens):
            n = ids.shape[1]
            feed = {"input_ids": ids, "attention_mask": np.ones((1, seen + n), np.int64), **past}
            if has_positions:
                feed["position_ids"] = np.arange(seen, seen + n, dtype=np.int64)[None]
            outputs = session.run(names, feed)
            nxt = int(outputs[0][0, -1].argmax())
            tokens.append(nxt)
            if step == 0:
                ttft = time.perf_counter() - start
            past = {
                name.replace("present.", "past_key_values."): v for name, v in zip(names[1:], outputs[1:], strict=True)
            }
            seen += n
            ids = np.array([[nxt]], dtype=np.int64)
        return Timing(tokens, ttft, time.perf_counter() - start)

    def close() -> None:
        nonlocal session
        del session

    return Runner(label, run, close)


def ort_ortvalue_runner(label: str, path: Path, kv_heads: int, head_dim: int) -> Runner:
    """As `ort_numpy_runner`, but the presents stay OrtValues and go straight back in."""
    session = cpu_session(path)
    kv = kv_inputs(session, kv_heads, head_dim)
    names = [o.name for o in session.get_outputs()]
    past_names = [name.replace("present.", "past_key_values.") for name in names[1:]]
    has_positions = any(i.name == "position_ids" for i in session.get_inputs())
    run_options = ort.RunOptions()
    value = ort.OrtValue.ortvalue_from_numpy

    def run(prompt: list[int], new_tokens: int) -> Timing:
        start = time.perf_counter()
        ids = np.array([prompt], dtype=np.int64)
        past = {name: value(np.zeros(dims, np.float32)) for name, dims in kv}
        seen = 0
        tokens: list[int] = []
        ttft = 0.0
        for step in range(new_tokens):
            n = ids.shape[1]
            feed = {"input_ids": value(ids), "attention_mask": value(np.ones((1, seen + n), np.int64)), **past}
            if has_positions:
                feed["position_ids"] = value(np.arange(seen, seen + n, dtype=np.int64)[None])
            outputs = session.run_with_ort_values(names, feed, run_options)
            nxt = int(outputs[0].numpy()[0, -1].argmax())
            tokens.append(nxt)
            if step == 0:
                ttft = time.perf_counter() - start
            past = dict(zip(past_names, outputs[1:], strict=True))
            seen += n
            ids = np.array([[nxt]], dtype=np.int64)
        return Timing(tokens, ttft, time.perf_counter() - start)

    def close() -> None:
        nonlocal session
        del session

    return Runner(label, run, close)
