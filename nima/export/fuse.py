"""The ``ort`` target: rewrite the portable graph into ONNX Runtime's fused contrib ops.

onnxscript's ORT fusion rules (the rewriter ORT's own tooling uses) turn the standard-op
subgraphs of the export into single kernels: scaled dot-product attention into
``MultiHeadAttention``, rotary and GELU/bias patterns into their fused forms. (RMSNorm, written
as ``x / sqrt(mean(x^2) + eps)``, is fused into ``SimplifiedLayerNormalization`` by ORT itself
when a session loads either graph.) The portable graph stays the default: it runs on any ONNX
runtime; the fused one needs ORT.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx_ir as ir
import onnxruntime as ort

TARGETS = ("portable", "ort")


def fuse_for_ort(source: Path, target: Path) -> dict[str, int]:
    """Write the ORT-fused version of ``source`` to ``target``; return how often each rule fired."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    previous = logging.getLogger("onnxscript").level
    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    try:
        model = ir.load(str(source))
        model, stats = optimize_for_ort(model)
        ir.save(model, str(target))
    finally:
        logging.getLogger("onnxscript").setLevel(previous)
    # The fused ops (SimplifiedLayerNormalization in the default domain, com.microsoft ops) are
    # ORT's, unknown to onnx.checker: ORT itself, loading the graph, is the check for this target.
    ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    return {name: count for name, count in stats.items() if count}
