"""What `nima export --onnx` can make: dtypes, quantizations and targets, and the check of a combination.

Kept free of torch and onnx so that the command refuses a mistyped flag before loading them (seconds).
"""

from __future__ import annotations

from nima.export.errors import UnsupportedExport
from nima.spec import ModelSpec

DTYPES = ("fp32", "fp16")
QUANTIZATIONS = ("int8", "int4")  # `nima.export.quantize`
TARGETS = ("portable", "ort")  # every target some family exports to (`nima.export.families`)
GQA_HEAD_MULTIPLE = 16  # ORT's CPU GroupQueryAttention rejects other head sizes


def check_options(dtype: str, quantize: str | None, target: str) -> None:
    """Refuse a dtype, quantization or target this exporter does not make (`UnsupportedExport`)."""
    if dtype == "bf16":
        raise UnsupportedExport(
            "--dtype bf16: ONNX Runtime's CPU provider has no bf16 MatMul, Add or Mul kernels, so a bf16 "
            "graph could not be verified here nor run on a CPU; use fp16 (or fp32 with --quantize)"
        )
    if dtype not in DTYPES:
        raise UnsupportedExport(f"--dtype {dtype}: supported are {' and '.join(DTYPES)}")
    if target not in TARGETS:
        raise UnsupportedExport(f"--target {target}: supported are {', '.join(TARGETS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UnsupportedExport(f"--quantize {quantize}: supported are {', '.join(QUANTIZATIONS)}")
    if quantize is not None and dtype != "fp32":
        raise UnsupportedExport(f"--quantize {quantize} starts from the fp32 graph; drop --dtype {dtype}")


def gqa_blocker(spec: ModelSpec, dtype: str) -> str | None:
    """Why ``spec`` cannot use the ``ort`` target's GroupQueryAttention export in ``dtype``, or None when it
    can. Here, torch-free, because the runtime reads it too: a server moving cached rows needs to know
    whether the graph rotates keys by cache index (`nima.serve.cache_shift`)."""
    if spec.head_dim % GQA_HEAD_MULTIPLE:
        return f"head_dim {spec.head_dim} is not a multiple of {GQA_HEAD_MULTIPLE} (ORT's CPU kernel needs that)"
    if dtype not in ("fp32", "fp16"):
        return f"{dtype}: ORT's CPU GroupQueryAttention kernel runs fp32 and fp16 only"
    return None
