"""Weight quantisation of an exported fp32 graph with ONNX Runtime's own tools.

- ``int8`` on an ``ort`` graph: ORT's `MatMulNBits` with 8-bit weights, symmetric, a scale per
  block of `INT8_BLOCK` weights, and ``accuracy_level`` 4 (activations quantized per block to int8,
  int8 multiplies): llama.cpp's Q8_0 scheme. Against the portable form below on the same ``ort``
  graph of a trained 3.2M-parameter character model, the export check's largest logit difference
  was 1.0e-2 of the largest logit against 1.6e-2, greedy agreement 100% against 97.9%; at 124M it
  decoded 1.05x and 1.17x as fast in two runs (bench/int4.py). The op is ORT's own, as the ``ort``
  target's attention already is.
- ``int8`` on a ``portable`` graph: `quantize_dynamic` — MatMul weights stored as int8 per output
  channel, activations quantised on the fly (MatMulInteger); about 4x smaller MatMul weights. The weights use 7 bits
  (``reduce_range``): on x86 CPUs without VNNI (AVX2, plain AVX-512) ORT multiplies uint8
  activations by int8 weights with an instruction that adds pairs of products into saturating
  16-bit sums, and full-range per-channel weights overflow them. Measured on a 2-core AVX2 AMD EPYC:
  one 64x96 MatMul of Gaussian values off by 19% of its largest output with 8 bits, 1.1% with 7;
  a small trained model's logits off by 27% (greedy agreement 90%) against 9.5% (98%), at the
  same speed. onnxruntime's quantization docs recommend 7 bits for CPUs without VNNI,
  "particularly helpful for per-channel weight quantization"; a bundle is exported once and
  deployed on either kind, and 7 bits cost little where VNNI would not have saturated.
- ``int4``: `MatMulNBitsQuantizer` — block-wise (32) symmetric 4-bit weights in ORT's fused
  `MatMulNBits` contrib op; about 7x smaller MatMul weights. ``accuracy_level`` 4: on CPUs the
  kernel quantizes each block of activations to int8 and multiplies in int8, as onnxruntime-genai's
  builder sets it for CPU; at level 0 it dequantizes the weights to fp32 first, which made int4
  slower than int8. Blocks of 64 would be 1.2x faster again at 124M, but a trained
  encoder-decoder's greedy output left the fp32 bundle's at its third token with them (block 32
  keeps its first eight: tests/export/test_seq2seq_bundle.py). Figures: docs/performance.md,
  "int4 with int8 compute".

All leave everything else (norms, attention arithmetic) in fp32, except the token embedding, which
is then stored as int8 rows with a scale each (`nima.export.table_quantize`). All quantize
only MatMuls whose weight is an initializer; a tied output head multiplies by a ``Transpose``
of the embedding table instead (ORT folds it when it loads the graph), so before quantizing,
`untie_head` gives the head its own transposed copy: the quantized head is read at every
step, the fp32 table only one row per token (`Gather`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from nima.export.logits_to_keep import head_path
from nima.export.options import QUANTIZATIONS
from nima.export.parity import session_for
from nima.export.table_quantize import quantize_tables

INT4_BLOCK = 32  # weights per scale, as llama.cpp's Q4_0 (see the module docstring)
INT8_BLOCK = 128  # weights per scale of the ``ort`` target's 8-bit MatMulNBits (see the module docstring)
ACCURACY_LEVEL = 4  # MatMulNBits computes in int8 on CPUs (see the module docstring)


def quantize_in_place(path: Path, kind: str, ort_kernels: bool = False) -> Path:
    """Replace the fp32 graph at ``path``, and its external data file ``<name>.data`` if it has one (a graph
    whose weights pass `nima.export.dynamo.EXTERNAL_BYTES`), by the ``kind``-quantised graph, with external
    data likewise; ``ort_kernels``: an ``ort`` target's graph (`quantize`)."""
    data = path.with_name(path.name + ".data")
    external = data.exists()
    with tempfile.TemporaryDirectory(prefix=".fp32-", dir=path.parent) as scratch:
        fp32 = Path(scratch) / path.name
        path.rename(fp32)
        if external:
            data.rename(Path(scratch) / data.name)  # the graph names its data file relative to itself
        quantize(fp32, path, kind, external, ort_kernels)
    return path


def untie_head(source: Path, target: Path, external: bool = False) -> bool:
    """Write ``source`` to ``target`` with the output head's ``Transpose(table)`` weight replaced by
    its own transposed initializer; False, writing nothing, when the head has no such weight."""
    model = ir.load(str(source))
    path = head_path(model.graph)
    if not path:
        return False
    head = path[0]
    transpose = head.inputs[1].producer() if head.inputs[1] is not None else None
    if transpose is None or transpose.op_type != "Transpose" or transpose.inputs[0].const_value is None:
        return False
    table = transpose.inputs[0].const_value.numpy()  # (V, d_model)
    perm = transpose.attributes.get_ints("perm", list(range(table.ndim))[::-1])
    weight = ir.Value(name="head.weight.transposed", shape=ir.Shape([table.shape[i] for i in perm]))
    weight.const_value = ir.tensor(np.ascontiguousarray(table.transpose(perm)), name=weight.name)  # (d_model, V)
    weight.type = ir.TensorType(weight.const_value.dtype)
    model.graph.register_initializer(weight)
    head.replace_input_with(1, weight)
    RemoveUnusedNodesPass()(model)  # the Transpose, now read by nothing
    ir.save(model, str(target), external_data=target.name + ".data" if external else None)
    return True


def quantize(source: Path, target: Path, kind: str, external: bool = False, ort_kernels: bool = False) -> Path:
    """Write the ``kind``-quantised version of the fp32 graph ``source`` to ``target``; ``external``:
    its weights in ``<target name>.data`` beside it; ``ort_kernels``: int8 in ORT's own `MatMulNBits`
    rather than standard ONNX ops (the module docstring)."""
    if kind not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {kind!r}; expected one of {', '.join(QUANTIZATIONS)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".untied-", dir=target.parent) as scratch:
        untied = Path(scratch) / source.name
        # the untied copy's weights always go to external data: the head's copy may carry a graph
        # just under protobuf's 2 GB past it, and it is a scratch file the quantizers read either way
        graph = untied if untie_head(source, untied, external=True) else source
        _quantize(graph, target, kind, external, ort_kernels)
    model = ir.load(str(target))
    if quantize_tables(model):  # the token embedding as int8 rows (`nima.export.table_quantize`)
        with tempfile.TemporaryDirectory(prefix=".tables-", dir=target.parent) as scratch:
            staged = Path(scratch) / target.name
            ir.save(model, str(staged), external_data=staged.name + ".data" if external else None)
            del model  # its tensors may map the files replaced below
            staged.replace(target)
            if external:
                (Path(scratch) / (staged.name + ".data")).replace(target.with_name(target.name + ".data"))
    onnx.checker.check_model(str(target), full_check=True)  # MatMulNBits is ORT's: the checker passes over it
    session_for(target)  # and ORT checks it
    return target


def _quantize(source: Path, target: Path, kind: str, external: bool, ort_kernels: bool = False) -> None:
    """`quantize` with onnxruntime's tools, their logging kept quiet."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        # Importing matmul_nbits_quantizer calls logging.basicConfig(level=INFO), which would print
        # a line for every node of the graph; the root logger is put back as it was afterwards.
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        root.setLevel(logging.ERROR)  # both tools log every node at INFO/WARNING
        if kind == "int8" and not ort_kernels:
            quantize_dynamic(
                str(source),
                str(target),
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,  # see the module docstring
                use_external_data_format=external,
            )
        else:
            bits, block = (8, INT8_BLOCK) if kind == "int8" else (4, INT4_BLOCK)
            quantizer = MatMulNBitsQuantizer(
                onnx.load(str(source)), bits=bits, block_size=block, is_symmetric=True, accuracy_level=ACCURACY_LEVEL
            )
            quantizer.process()
            quantizer.model.save_model_to_file(str(target), external)
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
