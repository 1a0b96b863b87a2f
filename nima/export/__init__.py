"""Model -> ONNX bundle: graph export, export-time parity check, genai config, model card."""
