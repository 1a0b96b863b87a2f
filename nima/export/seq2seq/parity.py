"""Export-time parity of an encoder-decoder: ONNX Runtime's two graphs against the PyTorch model.

The decoder-only check (`nima.export.decoder.parity`), extended to the source side. On random ids:

- sources of different lengths, right-padded, through ``encoder.onnx`` and ``model.encode``:
  the encoder hidden states are compared on real source positions;
- the decoder then runs a left-padded batch of decoder prompts (prefill), then ``decode_steps``
  cached steps feeding PyTorch's greedy token (the decoder-only loop, `compare_steps`), with
  ONNX Runtime fed the *ONNX encoder's* cross-attention keys/values and its own ``present.*``,
  so the whole chain a runtime uses is what is measured; logits are compared on real positions.

The report is a `ParityReport` (same tolerances, same model-card table) plus the encoder figure.
Quantized graphs (``quantize``) are held, like decoder-only ones, to the decoder logits' difference
relative to the largest reference logit and to greedy agreement: what a runtime gets from the
quantized encoder is what the decoder logits measure. The encoder's own relative difference is
reported, not held to the logit tolerance: dynamic int8 activations on random ids moved hidden
states by up to a third of their largest value where the logits moved by 6%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from nima.builders.models import EncoderDecoderLM
from nima.export.parity import ParityReport, compare_steps, held_to, left_padded_prompts
from nima.export.seq2seq.contract import cross_key_values, cross_names
from nima.layout import ATTENTION_MASK, ENCODER_ATTENTION_MASK, INPUT_IDS
from nima.spec import ModelSpec


@dataclass(frozen=True)
class Seq2SeqParity(ParityReport):
    """`ParityReport` of the decoder logits, plus the encoder hidden states' difference."""

    encoder_max_abs_diff: float
    source_lengths: tuple[int, ...]
    encoder_scale: float = 1.0  # max |reference hidden state|

    @property
    def encoder_measured(self) -> float:
        """The encoder figure held to ``tolerance``: relative to ``encoder_scale`` when
        ``relative``, else to ``encoder_scale`` or 1, the larger."""
        unit = max(self.encoder_scale, 1e-12) if self.relative else max(self.encoder_scale, 1.0)
        return self.encoder_max_abs_diff / unit

    @property
    def passed(self) -> bool:
        encoder_ok = self.relative or self.encoder_measured <= self.tolerance  # quantized: see the module docstring
        return super().passed and encoder_ok

    def describe(self) -> str:
        if self.relative:
            encoder = f"encoder max |hidden diff| / max |hidden| {self.encoder_measured:.2e} (reported)"
        elif self.encoder_scale > 1.0:
            encoder = f"encoder max |hidden diff| / max |hidden| ({self.encoder_scale:.3g}) {self.encoder_measured:.2e}"
        else:
            encoder = f"encoder max |hidden diff| {self.encoder_max_abs_diff:.2e}"
        return f"{encoder}; decoder {super().describe()}"


def check_seq2seq_parity(
    model: EncoderDecoderLM,
    spec: ModelSpec,
    encoder: ort.InferenceSession,
    decoder: ort.InferenceSession,
    dtype: str = "fp32",
    quantize: str | None = None,
    batch: int = 3,
    decode_steps: int = 8,
    seed: int = 0,
) -> Seq2SeqParity:
    """Run PyTorch (fp32) and ORT side by side; see the module docstring."""
    model = model.float().eval()
    rng = np.random.default_rng(seed)
    # sources: random ids, right-padded (any padding works: the encoder masks by attention_mask)
    src, src_mask, source_lengths = left_padded_prompts(rng, spec, batch, max(2, min(10, spec.max_seq_len)))
    src_mask = src_mask[:, ::-1].copy()  # (B, S) right padding
    with torch.no_grad():
        hidden = model.encode(torch.from_numpy(src), torch.from_numpy(src_mask))  # (B, S, d_model)
        cross = cross_key_values(model, hidden)
    enc_out = encoder.run(None, {INPUT_IDS: src, ATTENTION_MASK: src_mask})
    real_source = src_mask.astype(bool)  # (B, S)
    encoder_diff = float(np.abs(enc_out[0].astype(np.float32) - hidden.numpy())[real_source].max())
    encoder_scale = float(np.abs(hidden.numpy())[real_source].max())
    # the decoder graph gets the ONNX encoder's cross keys/values, PyTorch its own
    extra = {ENCODER_ATTENTION_MASK: src_mask, **dict(zip(cross_names(spec.n_layers), enc_out[1:], strict=True))}
    torch_src_mask = torch.from_numpy(src_mask)

    def torch_step(ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, past: object) -> tuple:
        logits, presents, _ = model.decode(ids, None, torch_src_mask, mask, positions, past, cross)
        return logits, presents

    ids, mask, lengths = left_padded_prompts(rng, spec, batch, max(2, min(8, spec.max_seq_len - decode_steps)))
    report = {"prompt_lengths": lengths, **held_to(quantize or dtype)}
    ort_dtype = np.float16 if dtype == "fp16" else np.float32
    decoded = compare_steps(torch_step, decoder, extra, ids, mask, spec, ort_dtype, decode_steps, report)
    return Seq2SeqParity(
        **vars(decoded), encoder_max_abs_diff=encoder_diff, source_lengths=source_lengths, encoder_scale=encoder_scale
    )
