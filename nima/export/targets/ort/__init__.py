"""The ``ort`` export target: ONNX Runtime's fused contrib ops (`export`: the entry point; `model`: the
fused model; `gqa_op`, `padding_op`: custom ops and their ONNX forms; `rules`: graph rewrites)."""
