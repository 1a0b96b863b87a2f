"""The training step and loop: learning happens, accumulation equals a larger batch, evaluation figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from train_support import TINY, invoke, make_corpus, make_run, read_metrics

from nima.train.loop import evaluate, train_step


def test_loss_decreases_on_shakespeare(tmp_path: Path, corpus: Path, spec_file: Path) -> None:
    result = invoke("train", spec_file, "--data", corpus, "-o", tmp_path / "run", "--set", "training.max_steps=60")
    assert result.exit_code == 0, result.output
    losses = [loss for _, loss in read_metrics(tmp_path / "run")]
    val = [loss for _, loss in read_metrics(tmp_path / "run", "val")]
    assert len(losses) == 60 and len(val) == 6
    uniform = math.log(TINY["vocab_size"])
    assert losses[0] == pytest.approx(uniform, rel=0.1)  # starts near chance
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.8  # and learns
    assert val[-1] < val[0] < uniform


@pytest.mark.parametrize("k", [2, 4])
def test_accumulating_k_micro_batches_equals_one_k_times_larger_batch(k: int) -> None:
    corpus = make_corpus()
    big = make_run(corpus, batch_size=8, grad_accum=1, grad_clip=0.0)
    small = make_run(corpus, batch_size=8 // k, grad_accum=k, grad_clip=0.0)
    loss_big, tokens_big, _, _ = train_step(big, 0)
    loss_small, tokens_small, _, _ = train_step(small, 0)
    assert tokens_big == tokens_small == 8 * TINY["max_seq_len"]
    assert loss_small.item() == pytest.approx(loss_big.item(), rel=1e-6)
    for (name, a), b in zip(big.model.named_parameters(), small.model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name
    # the optimizer really moved the weights (so the comparison above is not vacuous)
    fresh = make_run(corpus)
    assert not torch.allclose(fresh.model.embedding.weight, big.model.embedding.weight, atol=1e-5)


def test_clipping_bounds_the_update() -> None:
    corpus = make_corpus()
    run = make_run(corpus, grad_clip=1e-3)
    before = [p.detach().clone() for p in run.model.parameters()]
    _, _, norm, lr = train_step(run, 0)
    assert norm is not None and norm.item() > 1e-3  # the raw norm is reported, then clipped
    assert lr == pytest.approx(3e-3 / 5)  # first warmup step
    moved = max((p - b).abs().max().item() for p, b in zip(run.model.parameters(), before, strict=True))
    assert moved < 2 * lr  # Adam's first step moves each weight by ~lr at most


def test_evaluation_figures_agree() -> None:
    corpus = make_corpus()
    run = make_run(corpus)
    val = evaluate(run)
    assert val["ppl"] == pytest.approx(math.exp(val["loss"]))
    bytes_per_token = corpus.n_bytes["val"] / len(corpus.tokens["val"])
    assert val["bpb"] == pytest.approx(val["loss"] / (math.log(2) * bytes_per_token))
    assert evaluate(run) == val  # fixed windows: the same model gives the same figures
    assert run.model.training  # evaluation leaves the model in training mode


def test_gradient_checkpointing_changes_memory_not_results() -> None:
    corpus = make_corpus()
    plain = make_run(corpus)
    recomputed = make_run(corpus, gradient_checkpointing=True)
    assert all(s.gradient_checkpointing for s in recomputed.model.stacks())
    assert train_step(plain, 0)[0].item() == pytest.approx(train_step(recomputed, 0)[0].item(), rel=1e-6)
    for a, b in zip(plain.model.parameters(), recomputed.model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
