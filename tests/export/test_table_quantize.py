"""8-bit lookup tables: a Gather of a large fp32 table becomes int8 rows times per-row scales, within half a
quantization step of the fp32 rows; a table anything else reads stays fp32; quantized bundles carry no fp32
token embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from nima.export.parity import session_for
from nima.export.table_quantize import MIN_TABLE_ELEMENTS, quantize_tables

ROWS, WIDTH = 1024, MIN_TABLE_ELEMENTS // 1024


def graph(tmp_path: Path, also_matmul: bool) -> tuple[Path, np.ndarray]:
    """ids (B, T) -> Gather(table) (B, T, WIDTH); with ``also_matmul`` the table is read by a MatMul too."""
    table = np.random.default_rng(0).normal(0, 1, (ROWS, WIDTH)).astype(np.float32)
    table[7] = 0.0  # an all-zero row
    table[8] *= 1000.0  # a row far larger than the others: per-row scales keep the rest exact to their own size
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)]
    outputs = [helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)]
    if also_matmul:
        nodes.append(helper.make_node("MatMul", ["rows", "table_t"], ["scores"]))
        nodes.append(helper.make_node("Transpose", ["table"], ["table_t"]))
        outputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, None))
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
            outputs,
            [numpy_helper.from_array(table, "table")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    return path, table


def test_gather_reads_int8_rows_within_half_a_step(tmp_path: Path) -> None:
    path, table = graph(tmp_path, also_matmul=False)
    model = ir.load(str(path))
    assert quantize_tables(model) == ["table"]
    assert "table" not in model.graph.initializers
    assert model.graph.initializers["table.int8"].const_value.dtype == ir.DataType.INT8
    ir.save(model, str(tmp_path / "q.onnx"))
    ids = np.array([[0, 7, 8, 1023], [5, 5, 6, 9]], dtype=np.int64)
    (got,) = session_for(tmp_path / "q.onnx").run(None, {"ids": ids})
    want = table[ids]  # (2, 4, WIDTH)
    step = np.abs(table).max(axis=1)[ids][..., None] / 127  # each row's quantization step
    assert (np.abs(got - want) <= step / 2 + 1e-6).all()
    assert (got[0, 1] == 0).all()  # the zero row stays zero
    assert np.abs(got - want).max() > 0  # stored as int8 indeed: not exact


def test_a_table_read_by_more_than_gather_stays(tmp_path: Path) -> None:
    path, _ = graph(tmp_path, also_matmul=True)
    model = ir.load(str(path))
    assert quantize_tables(model) == []
    assert model.graph.initializers["table"].const_value.dtype == ir.DataType.FLOAT


@pytest.mark.parametrize("external", [False, True])
def test_a_quantized_bundle_stores_its_embedding_as_int8(
    external: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--quantize int8 and int4 on a model whose embedding is a large table (4,096 x 64): the bundle holds it as
    int8 rows, no fp32 copy, and the export's check against PyTorch passed (it raises otherwise); so too with
    the weights in model.onnx.data (the limit set so this model's weights go either way)."""
    from nima.builders import build_model, save_build
    from nima.export import dynamo
    from nima.export.bundle import export_bundle
    from nima.spec import spec_from_dict

    monkeypatch.setattr(dynamo, "EXTERNAL_BYTES", 1024 if external else 2**30)  # this model's 1.1 MB: either way
    spec = spec_from_dict(
        {
            "vocab_size": 4096,
            "max_seq_len": 32,
            "d_model": 64,
            "n_layers": 1,
            "attention": {"n_heads": 4},
            "ffn": {"kind": "swiglu", "hidden": 96},
            "position": {"kind": "rope"},
            "norm": {"kind": "rmsnorm"},
            "bias": False,
            "tie_embeddings": True,
        }
    )
    source = save_build(build_model(spec, seed=3), spec, tmp_path / "m")
    for kind in ("int8", "int4"):
        bundle = export_bundle(source, tmp_path / kind, target="ort", quantize=kind).out
        assert (bundle / "model.onnx.data").is_file() == external
        tables = {
            init.name: (init.data_type, tuple(init.dims))
            for init in onnx.load(str(bundle / "model.onnx")).graph.initializer
            if tuple(init.dims) == (4096, 64)
        }
        assert sorted(tables.values()) == [(TensorProto.INT8, (4096, 64))], tables
