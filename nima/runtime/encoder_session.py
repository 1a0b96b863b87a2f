"""One ONNX Runtime session over an encoder-decoder's encoder graph, run once per batch of sources."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from nima.layout import ATTENTION_MASK, CROSS_KEY, CROSS_VALUE, ENCODER_ATTENTION_MASK, INPUT_IDS
from nima.runtime.errors import GenerateError
from nima.runtime.session import Value, device_value


class EncoderSession:
    """Runs an encoder-decoder's ``encoder.onnx`` once per batch of sources.

    Returns what the decoder needs at every step: the source mask and each decoder layer's
    cross-attention keys/values, as ORT values named like the decoder's inputs.
    """

    def __init__(self, session: ort.InferenceSession, n_layers: int) -> None:
        self.session = session
        self.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._cross_names = [name % i for i in range(n_layers) for name in (CROSS_KEY, CROSS_VALUE)]
        outputs = [out.name for out in session.get_outputs()]
        missing = [name for name in self._cross_names if name not in outputs]
        if missing:
            raise GenerateError(f"the encoder graph lacks the output {missing[0]!r} of the seq2seq contract")

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, Value]:
        """``input_ids``, ``attention_mask``: (B, S) int64, padded sources -> the decoder's fixed inputs."""
        feed = {INPUT_IDS: input_ids.astype(np.int64), ATTENTION_MASK: attention_mask.astype(np.int64)}
        values = self.session.run(self._cross_names, feed)  # (B, H_kv, S, hd) each
        fixed = {ENCODER_ATTENTION_MASK: device_value(feed[ATTENTION_MASK], self.device)}
        for name, value in zip(self._cross_names, values, strict=True):
            fixed[name] = device_value(value, self.device)
        return fixed
