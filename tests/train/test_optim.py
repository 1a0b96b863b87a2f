"""Optimizer groups and the learning-rate schedule against formulas written out here."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nima.builders import build_model
from nima.spec import spec_from_dict
from nima.spec.sections import ScheduleSpec
from nima.train.optim import build_optimizer, lr_at, param_groups

PEAK, WARMUP, STEPS, RATIO = 1e-3, 10, 111, 0.1  # decay over steps 10..110: p = (step - 10) / 100


@pytest.mark.parametrize("step", [0, 4, 9, 10, 11, 37, 60, 100, 110])
def test_cosine(step: int) -> None:
    schedule = ScheduleSpec(kind="cosine", warmup_steps=WARMUP, min_lr_ratio=RATIO)
    if step < WARMUP:
        expected = PEAK * (step + 1) / WARMUP
    else:
        p = (step - WARMUP) / (STEPS - 1 - WARMUP)
        expected = RATIO * PEAK + (PEAK - RATIO * PEAK) * 0.5 * (1 + math.cos(math.pi * p))
    assert lr_at(step, PEAK, schedule, STEPS) == pytest.approx(expected, rel=1e-12)


def test_schedule_landmarks() -> None:
    cosine = ScheduleSpec(kind="cosine", warmup_steps=WARMUP, min_lr_ratio=RATIO)
    linear = ScheduleSpec(kind="linear", warmup_steps=WARMUP, min_lr_ratio=RATIO)
    constant = ScheduleSpec(kind="constant", warmup_steps=WARMUP, min_lr_ratio=RATIO)
    assert lr_at(0, PEAK, cosine, STEPS) == pytest.approx(1e-4)  # warmup starts at peak / warmup
    assert lr_at(WARMUP - 1, PEAK, cosine, STEPS) == pytest.approx(PEAK)
    assert lr_at(WARMUP, PEAK, cosine, STEPS) == pytest.approx(PEAK)
    assert lr_at(STEPS - 1, PEAK, cosine, STEPS) == pytest.approx(RATIO * PEAK)  # ends at the floor
    assert lr_at(60, PEAK, cosine, STEPS) == pytest.approx(0.55e-3)  # halfway: mean of peak and floor
    assert lr_at(60, PEAK, linear, STEPS) == pytest.approx(0.55e-3)
    assert lr_at(35, PEAK, linear, STEPS) == pytest.approx(PEAK - 0.9e-3 * 0.25)
    assert lr_at(STEPS - 1, PEAK, linear, STEPS) == pytest.approx(RATIO * PEAK)
    assert lr_at(100, PEAK, constant, STEPS) == PEAK
    no_warmup = ScheduleSpec(kind="cosine", warmup_steps=0, min_lr_ratio=0.0)
    assert lr_at(0, PEAK, no_warmup, STEPS) == PEAK
    assert lr_at(STEPS - 1, PEAK, no_warmup, STEPS) == pytest.approx(0.0, abs=1e-15)


def _spec(**fields: object) -> object:
    base = {
        "vocab_size": 50,
        "max_seq_len": 16,
        "d_model": 16,
        "n_layers": 2,
        "attention": {"n_heads": 2},
        "ffn": {"kind": "swiglu", "hidden": 32},
        "position": {"kind": "learned"},
        "bias": True,
    }
    return spec_from_dict({**base, **fields})


@pytest.mark.parametrize("tie", [True, False])
def test_no_decay_on_norms_biases_and_embeddings(tie: bool) -> None:
    model = build_model(_spec(tie_embeddings=tie), seed=0)
    decay, rest = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in rest["params"]}
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert decayed | exempt == set(names.values()) and not decayed & exempt
    for name, p in model.named_parameters():
        is_embedding = name in ("embedding.weight", "decoder.position.table.weight")
        assert (name in exempt) == (p.dim() < 2 or is_embedding), name
    assert ("head.weight" in decayed) == (not tie)  # a tied head is the embedding: no decay
    assert any("ffn.gate" in n for n in decayed) and any(n.endswith(".bias") for n in exempt)


def test_optimizer_settings_come_from_the_spec() -> None:
    spec = _spec(training={"optimizer": {"lr": 2e-3, "betas": [0.8, 0.9], "eps": 1e-6, "weight_decay": 0.05}})
    opt = build_optimizer(build_model(spec, seed=0), spec.training.optimizer, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (2e-3, (0.8, 0.9), 1e-6, 0.05)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    assert all(g["fused"] for g in opt.param_groups)


def test_a_frozen_parameter_is_left_out() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    model[0].weight.requires_grad_(False)
    groups = param_groups(model, 0.1)
    assert sum(len(g["params"]) for g in groups) == 3
