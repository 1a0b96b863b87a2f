"""Export targets: the forms a decoder graph can take (`portable`: standard ONNX ops, packed
projections; `ort`: ONNX Runtime's fused kernels). Each turns a model into a graph at a path."""
