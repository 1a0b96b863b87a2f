"""Export-time parity of a decoder: ``model.onnx`` in ONNX Runtime against the fp32 PyTorch model
(the shared loop and tolerances: `nima.export.parity`)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from torch import nn

from nima.export.parity import ParityReport, compare_steps, held_to, left_padded_prompts
from nima.spec import ModelSpec


def check_parity(
    model: nn.Module,
    spec: ModelSpec,
    session: ort.InferenceSession,
    dtype: str = "fp32",
    quantize: str | None = None,
    batch: int = 3,
    decode_steps: int = 8,
    seed: int = 0,
) -> ParityReport:
    """Run PyTorch (fp32) and ORT side by side; see the module docstring."""
    model = model.float().eval()
    rng = np.random.default_rng(seed)
    longest = max(2, min(12, spec.max_seq_len - decode_steps))
    ids, mask, lengths = left_padded_prompts(rng, spec, batch, longest)
    report = {"prompt_lengths": lengths, **held_to(quantize or dtype)}
    ort_dtype = np.float16 if dtype == "fp16" else np.float32
    return compare_steps(model, session, {}, ids, mask, spec, ort_dtype, decode_steps, report)
