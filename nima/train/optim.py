"""AdamW with two parameter groups, and the learning-rate schedule as a pure function of the step.

Weight decay pulls weights towards zero; that is a sensible prior for matrices but not for
norm gains (whose neutral value is 1), biases, or embedding tables (rows of rare tokens get
few gradient updates and would decay away), so those go in a group without decay.

The schedule is a function of the step rather than an `LRScheduler` object, so a checkpoint
needs nothing but the step to resume it and a test can compare it with the formula.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nima.spec.sections import OptimizerSpec, ScheduleSpec


def no_decay_ids(model: nn.Module) -> set[int]:
    """ids of parameters exempt from weight decay: dim < 2 (norms, biases) and every embedding table."""
    ids = {id(p) for p in model.parameters() if p.dim() < 2}
    ids |= {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return ids


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """``[{decayed matrices}, {the rest, weight_decay 0}]``; a tied head counts as its embedding."""
    exempt = no_decay_ids(model)
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    return [
        {"params": [p for p in params if id(p) not in exempt], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, spec: OptimizerSpec, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters with the fused kernel (one kernel for all parameters).

    torch has fused AdamW for CUDA and, since 2.4, for the CPU, where it halves the optimizer
    step of small models compared with the per-parameter loop.
    """
    return torch.optim.AdamW(
        param_groups(model, spec.weight_decay),
        lr=spec.lr,
        betas=spec.betas,
        eps=spec.eps,
        fused=device.type in ("cuda", "cpu"),
    )


def lr_at(step: int, peak: float, schedule: ScheduleSpec, max_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``max_steps``.

    Warmup: ``peak * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps. Then the
    decay runs over the remaining steps with progress ``p`` from 0 (step ``warmup_steps``) to 1
    (the last step, ``max_steps - 1``): cosine ``min + (peak - min) * (1 + cos(pi p)) / 2``,
    linear ``peak - (peak - min) * p``, constant ``peak``; ``min = min_lr_ratio * peak``.
    """
    warmup = schedule.warmup_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule.kind == "constant":
        return peak
    floor = schedule.min_lr_ratio * peak
    progress = min(1.0, (step - warmup) / max(1, max_steps - 1 - warmup))
    if schedule.kind == "linear":
        return peak - (peak - floor) * progress
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
