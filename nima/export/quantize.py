"""Weight quantisation of an exported fp32 graph with ONNX Runtime's own tools.

- ``int8``: `quantize_dynamic` — MatMul weights stored as int8 per output channel, activations
  quantised on the fly (MatMulInteger); about 4x smaller MatMul weights.
- ``int4``: `MatMulNBitsQuantizer` — block-wise (32) symmetric 4-bit weights in ORT's fused
  `MatMulNBits` contrib op, dequantised inside the kernel; about 8x smaller MatMul weights.

Both leave everything else (norms, attention arithmetic, embeddings) in fp32.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import onnxruntime as ort

QUANTIZATIONS = ("int8", "int4")


def quantize(source: Path, target: Path, kind: str) -> Path:
    """Write the ``kind``-quantised version of the fp32 graph ``source`` to ``target``."""
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # both tools log every node at INFO/WARNING
    try:
        if kind == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(source),
                str(target),
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        elif kind == "int4":
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), block_size=32, is_symmetric=True)
            quantizer.process()
            quantizer.model.save_model_to_file(str(target), False)
        else:
            raise ValueError(f"unknown quantization {kind!r}; expected one of {', '.join(QUANTIZATIONS)}")
    finally:
        logging.getLogger().setLevel(previous)
    ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])  # MatMulNBits etc. are ORT ops
    return target
