"""The optional ``logits_to_keep`` input: the head on the last k positions, every position by default.

Each graph (portable and ``ort``, LLaMA-style and GPT-2-style with a tied, biased head) runs a
left-padded prefill without the input and with k = 1, 3 and more than the prompt holds; the
logits kept must be the last positions of PyTorch's full forward, and the default all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
import yaml
from bundle_helpers import SPEC, invoke
from onnx import TensorProto, helper
from test_ort_target import GPT2, LLAMA, make_spec

import nima.export.decoder.graph as decoder_graph
from nima.builders import build_model
from nima.export.logits_to_keep import add_logits_to_keep
from nima.export.parity import session_for
from nima.export.targets.ort.export import export_for_ort
from nima.export.targets.portable import export_portable
from nima.layout import LOGITS, LOGITS_TO_KEEP
from nima.spec import ModelSpec

FAMILIES = {"llama": LLAMA, "gpt2": GPT2}


def prefill_feed(spec: ModelSpec, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    positions = np.clip(np.cumsum(mask, axis=-1) - 1, 0, None)  # (B, T)
    feed = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    for i in range(spec.n_layers):
        for kind in ("key", "value"):
            feed[f"past_key_values.{i}.{kind}"] = np.zeros(
                (ids.shape[0], spec.n_kv_heads, 0, spec.head_dim), np.float32
            )
    return feed


CASES = [(family, target, {}) for family in FAMILIES for target in ("portable", "ort")]
CASES.append(("llama", "ort", {"d_model": 32}))  # head_dim 8: the ort target's fusion-rules fallback


@pytest.mark.parametrize(("family", "target", "changes"), CASES)
def test_kept_logits_are_the_last_positions(family: str, target: str, changes: dict, tmp_path: Path) -> None:
    spec = make_spec(FAMILIES[family], **changes)
    model = build_model(spec, seed=1).eval()
    path = tmp_path / "model.onnx"
    if target == "portable":
        export_portable(model, spec, path)
    else:
        assert export_for_ort(model, spec, path).method == ("rules" if changes else "gqa")
    graph = onnx.load(str(path))
    default = next(init for init in graph.graph.initializer if init.name == LOGITS_TO_KEEP)
    assert onnx.numpy_helper.to_array(default) == 0 and graph.graph.input[-1].name == LOGITS_TO_KEEP
    dims = graph.graph.output[0].type.tensor_type.shape.dim
    assert dims[1].dim_param == "logits_sequence_length"

    rng = np.random.default_rng(0)
    ids = rng.integers(0, spec.vocab_size, (3, 7))  # (B, T)
    mask = np.ones((3, 7), dtype=np.int64)
    mask[1, :2] = mask[2, :5] = 0  # left padding
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask))[0].numpy()  # (B, T, V), every position
    session = session_for(path, threads=1)
    feed = prefill_feed(spec, ids, mask)
    every = session.run([LOGITS], feed)[0]
    real = mask.astype(bool)
    assert every.shape == want.shape and np.abs(every - want)[real].max() < 1e-4
    for keep in (1, 3, 11):
        kept = session.run([LOGITS], {**feed, LOGITS_TO_KEEP: np.array(keep, dtype=np.int64)})[0]
        last = min(keep, 7)
        assert kept.shape == (3, last, spec.vocab_size)
        assert np.abs(kept - want[:, -last:])[real[:, -last:]].max() < 1e-4


def test_a_graph_without_a_head_matmul_is_left_alone(tmp_path: Path) -> None:
    """No MatMul of constant weights before the logits: no input added, the graph unchanged."""
    x = helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, ["batch", "seq", 4])
    y = helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch", "seq", 4])
    onnx.save(
        helper.make_model(helper.make_graph([helper.make_node("Relu", ["input_ids"], [LOGITS])], "g", [x], [y])),
        tmp_path / "g.onnx",
    )
    model = ir.load(str(tmp_path / "g.onnx"))
    assert add_logits_to_keep(model) is False
    assert [v.name for v in model.graph.inputs] == ["input_ids"] and len(model.graph) == 1


def test_a_bias_after_the_head_is_sliced_with_it(tmp_path: Path) -> None:
    """Per-position ops between the head's MatMul and the logits (here a bias and a soft cap) stay after
    the slice: the kept logits equal the last rows of the whole output."""
    w = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["h", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Tanh", ["a"], [LOGITS]),
    ]
    inits = [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(np.ones(5, np.float32), "b")]
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", "seq", 4])
    out = helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch", "seq", 5])
    graph = helper.make_graph(nodes, "g", [h], [out], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), tmp_path / "g.onnx")
    model = ir.load(str(tmp_path / "g.onnx"))
    assert add_logits_to_keep(model) is True
    ir.save(model, str(tmp_path / "kept.onnx"))
    session = ort.InferenceSession(str(tmp_path / "kept.onnx"), providers=["CPUExecutionProvider"])
    hidden = np.random.default_rng(1).standard_normal((2, 6, 4)).astype(np.float32)
    want = np.tanh(hidden @ w + 1.0)
    assert np.allclose(session.run(None, {"h": hidden})[0], want, atol=1e-6)
    assert np.allclose(session.run(None, {"h": hidden, LOGITS_TO_KEEP: np.array(2)})[0], want[:, -2:], atol=1e-6)


def test_an_export_whose_head_is_not_found_fails_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every decoder Nima builds ends in the head's MatMul; a graph where that is not found is an exporter
    change, reported as a failed export (exit 1), not shipped without the input."""
    monkeypatch.setattr(decoder_graph, "add_logits_to_keep", lambda model: False)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    result = invoke("export", "--onnx", tmp_path / "spec.yaml", "-o", tmp_path / "bundle")
    assert result.exit_code == 1
    assert "no logits_to_keep" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "bundle").exists()
