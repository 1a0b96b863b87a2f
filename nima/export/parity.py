"""Export-time parity, the part every family shares: the report, the tolerances, and the decoder loop.

A family's check (`nima.export.decoder.parity`, `nima.export.seq2seq.parity`) runs ONNX Runtime
and the PyTorch model side by side through `compare_steps`. Both run the same random prompts —
a batch of different lengths, left-padded — through a prefill and then cached single-token
steps, feeding both the tokens PyTorch picks greedily.
Logits are compared at every real (non-padding) position, and, for graphs with the optional
``logits_to_keep`` input, the prefill's last position also as a runtime asks for it alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from nima.layout import ATTENTION_MASK, INPUT_IDS, LOGITS, LOGITS_TO_KEEP, PAST_KEY, PAST_VALUE, POSITION_IDS
from nima.spec import ModelSpec

# Against the fp32 PyTorch model. Float exports: max |logit difference|, in units of the largest
# reference logit once that passes 1 (rounding error grows with the values rounded: a trained
# model's logits in the tens differ by ten times what the same graph's unit-scale logits do), and
# half-precision ones also to a share of positions whose greedy next token agrees. Quantized
# weights change every logit a little, so they are held to a difference relative to the largest
# reference logit, however small, and to greedy agreement.
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2, "int8": 0.3, "int4": 0.3}
RELATIVE = {"int8", "int4"}
MIN_AGREEMENT = {"fp16": 0.9, "int8": 0.8, "int4": 0.75}


@dataclass(frozen=True)
class ParityReport:
    """What the check measured."""

    max_abs_diff: float
    prefill_max_abs_diff: float
    decode_max_abs_diff: float
    next_token_agreement: float  # share of real positions whose argmax agrees
    batch: int
    prompt_lengths: tuple[int, ...]
    decode_steps: int
    tolerance: float
    logit_scale: float  # max |reference logit|
    relative: bool  # tolerance applies to max_abs_diff / logit_scale; else to max_abs_diff / max(1, logit_scale)
    min_agreement: float

    @property
    def unit(self) -> float:
        """What ``max_abs_diff`` is divided by: the largest logit (quantized), else that or 1, the larger."""
        return max(self.logit_scale, 1e-12) if self.relative else max(self.logit_scale, 1.0)

    @property
    def measured(self) -> float:
        """The figure held to ``tolerance``."""
        return self.max_abs_diff / self.unit

    @property
    def passed(self) -> bool:
        return self.measured <= self.tolerance and self.next_token_agreement >= self.min_agreement

    def describe(self) -> str:
        scaled = self.relative or self.logit_scale > 1.0
        what = f"max |logit diff| / max |logit| ({self.logit_scale:.3g})" if scaled else "max |logit diff|"
        text = (
            f"{what} {self.measured:.2e} (tolerance {self.tolerance:.0e}; absolute: prefill "
            f"{self.prefill_max_abs_diff:.2e}, {self.decode_steps} cached steps {self.decode_max_abs_diff:.2e}), "
            "greedy agreement "
            f"{100 * self.next_token_agreement:.1f}%"
        )
        return text + (f" (at least {100 * self.min_agreement:.0f}%)" if self.min_agreement else "")


def held_to(kind: str) -> dict[str, Any]:
    """The `ParityReport` fields that say what an export of ``kind`` (a dtype or a quantization) is
    held to: its tolerance, whether that is relative to the largest logit, and the greedy agreement."""
    return {"tolerance": TOLERANCES[kind], "relative": kind in RELATIVE, "min_agreement": MIN_AGREEMENT.get(kind, 0.0)}


def session_for(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _positions(mask: np.ndarray, new: int) -> np.ndarray:
    return np.clip(np.cumsum(mask, axis=-1) - 1, 0, None)[:, -new:].astype(np.int64)


def left_padded_prompts(
    rng: np.random.Generator, spec: ModelSpec, batch: int, longest: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(ids, mask, lengths): ``batch`` random prompts from ``longest`` down to a third of it, left-padded."""
    lengths = tuple(int(n) for n in np.linspace(longest, max(1, longest // 3), batch).round())
    ids = rng.integers(0, spec.vocab_size, (batch, longest), dtype=np.int64)
    mask = np.zeros((batch, longest), dtype=np.int64)
    for row, n in enumerate(lengths):
        mask[row, longest - n :] = 1  # left padding
    return ids, mask, lengths


TorchStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, object], tuple[torch.Tensor, object]]


def compare_steps(
    torch_step: TorchStep,
    session: ort.InferenceSession,
    extra_feed: dict[str, np.ndarray],
    ids: np.ndarray,  # (B, T) left-padded prompts
    mask: np.ndarray,  # (B, T)
    spec: ModelSpec,
    ort_dtype: type,
    decode_steps: int,
    report: dict[str, Any],
) -> ParityReport:
    """Prefill then ``decode_steps`` greedy cached steps in both; ``torch_step(ids, mask, positions, cache)``
    returns (logits, cache). ``report`` holds the `ParityReport` fields this loop does not measure."""
    batch = ids.shape[0]
    kv_shape = (batch, spec.n_kv_heads, 0, spec.head_dim)
    past_ort = {
        name % i: np.zeros(kv_shape, ort_dtype) for i in range(spec.n_layers) for name in (PAST_KEY, PAST_VALUE)
    }
    past_torch = None
    keeps_last = LOGITS_TO_KEEP in {arg.name for arg in session.get_overridable_initializers()}
    diffs: list[float] = []
    scale = 0.0
    agree: list[bool] = []
    step_ids = ids
    for _ in range(decode_steps + 1):
        position_ids = _positions(mask, step_ids.shape[1])
        with torch.no_grad():
            ref, past_torch = torch_step(
                torch.from_numpy(step_ids), torch.from_numpy(mask), torch.from_numpy(position_ids), past_torch
            )
        ref_np = ref.float().numpy()
        feed = {INPUT_IDS: step_ids, ATTENTION_MASK: mask, POSITION_IDS: position_ids, **extra_feed, **past_ort}
        outputs = session.run(None, feed)
        got = outputs[0].astype(np.float32)
        real = mask[:, -step_ids.shape[1] :].astype(bool)  # (B, T) real query positions
        diffs.append(float(np.abs(got - ref_np)[real].max()))
        if keeps_last and step_ids.shape[1] > 1:  # the prefill a runtime runs: the last position's logits only
            last = session.run([LOGITS], {**feed, LOGITS_TO_KEEP: np.array(1, dtype=np.int64)})[0]  # (B, 1, V)
            diffs[-1] = max(diffs[-1], float(np.abs(last[:, 0].astype(np.float32) - ref_np[:, -1]).max()))
        scale = max(scale, float(np.abs(ref_np)[real].max()))
        agree.extend((got.argmax(-1) == ref_np.argmax(-1))[real].tolist())
        for i in range(spec.n_layers):
            past_ort[PAST_KEY % i] = outputs[1 + 2 * i]
            past_ort[PAST_VALUE % i] = outputs[2 + 2 * i]
        step_ids = ref_np[:, -1:].argmax(-1).astype(np.int64)  # (B, 1) greedy next token
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
    return ParityReport(
        max_abs_diff=max(diffs),
        prefill_max_abs_diff=diffs[0],
        decode_max_abs_diff=max(diffs[1:]) if len(diffs) > 1 else 0.0,
        next_token_agreement=float(np.mean(agree)),
        batch=batch,
        decode_steps=decode_steps,
        logit_scale=scale,
        **report,
    )
