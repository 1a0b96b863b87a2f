"""File and tensor names of an exported bundle, shared by the exporter and the runtime.

The tensor names follow ONNX Runtime GenAI and Optimum (see ``nima/export/contract.py`` for the
shapes). They live here, in a torch-free module, so the runtime reads bundles without the exporter.
"""

from __future__ import annotations

MODEL_FILE = "model.onnx"
ENCODER_FILE, DECODER_FILE, SEQ2SEQ_FILE = "encoder.onnx", "decoder.onnx", "seq2seq.json"  # encoder-decoders
SPEC_FILE = "nima.json"
TOKENIZER_FILE = "tokenizer.json"
GENAI_CONFIG_FILE = "genai_config.json"  # onnxruntime-genai's description of a decoder-only bundle

INPUT_IDS, ATTENTION_MASK, POSITION_IDS, LOGITS = "input_ids", "attention_mask", "position_ids", "logits"
LOGITS_TO_KEEP = "logits_to_keep"  # optional (a default of 0 in the graph): the last positions whose logits are made
PAST_KEY, PAST_VALUE = "past_key_values.%d.key", "past_key_values.%d.value"
PRESENT_KEY, PRESENT_VALUE = "present.%d.key", "present.%d.value"

# encoder-decoder bundles (see nima/export/seq2seq_contract.py)
ENCODER_HIDDEN, ENCODER_ATTENTION_MASK = "encoder_hidden_states", "encoder_attention_mask"
CROSS_KEY, CROSS_VALUE = "cross_key_values.%d.key", "cross_key_values.%d.value"
