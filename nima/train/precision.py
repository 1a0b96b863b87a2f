"""Numeric precision of the training step: fp32, bf16 autocast, or fp16 autocast with loss scaling.

Mixed precision is a GPU feature here: ``auto`` means bf16 on GPUs that support it and fp32
everywhere else (CPU autocast exists but is slower than fp32 for these models on most CPUs).
Weights, gradients and optimizer state stay fp32 in every mode; autocast only lowers the
matmul inputs. fp16's narrow range needs `torch.amp.GradScaler`; bf16 has fp32's range.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from nima.train.errors import TrainError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    """The resolved mode and the objects the loop uses: an autocast context and an optional scaler."""

    name: str  # fp32 | bf16 | fp16
    device: torch.device
    scaler: torch.amp.GradScaler | None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.name])


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """``training.precision`` for ``device``; bf16/fp16 on a CPU is a `TrainError` naming the field."""
    if requested == "auto":
        name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    elif requested != "fp32" and device.type != "cuda":
        raise TrainError(
            f"training.precision: {requested} needs a CUDA GPU, training runs on the CPU; use auto or fp32"
        )
    elif requested == "bf16" and not torch.cuda.is_bf16_supported():
        raise TrainError("training.precision: this GPU does not support bf16; use fp16 or auto")
    else:
        name = requested
    scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
    return Precision(name, device, scaler)
