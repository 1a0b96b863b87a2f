"""The training loop: optimizer steps with accumulation and clipping, logging, evaluation, checkpoints.

Everything it needs arrives ready-made in a `Run` (model, optimizer, precision, data, world);
what happens at a checkpoint is a callback, so the loop knows nothing about folders. Every
rank runs the same sequence of collectives (the log and eval all-reduces happen at the same
steps everywhere), which is what keeps DDP and FSDP from hanging.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nima.spec import ModelSpec
from nima.train.batches import Batch, Sampler, label_count
from nima.train.checkpoint import TrainState
from nima.train.data import Corpus
from nima.train.distributed import World, all_reduce_sum, gradient_sync
from nima.train.interrupt import Interrupted, stop_on_interrupt
from nima.train.metrics import MetricsLog
from nima.train.objective import Objective
from nima.train.optim import lr_at, set_lr
from nima.train.pairs import PairCorpus
from nima.train.precision import Precision
from nima.train.progress import Reporter


@dataclass
class Run:
    """The parts of a training run, built by `nima.train.run`."""

    spec: ModelSpec
    model: nn.Module  # what the optimizer holds and checkpoints read (FSDP shards it in place)
    train_model: nn.Module  # what the training step calls: the model, DDP-wrapped where distributed
    optimizer: torch.optim.Optimizer
    precision: Precision
    world: World
    corpus: Corpus | PairCorpus  # text windows or source/target pairs; both give batches the same way
    sampler: Sampler
    objective: Objective
    # more validation figures (an encoder-decoder's exact match), every rank calls it
    extra_eval: Callable[[Run], dict[str, float]] | None = None


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch


def dropout_seed(seed: int, step: int, rank: int) -> int:
    """A seed per (step, rank): dropout masks then depend on nothing a checkpoint has to carry."""
    return ((seed * 1_000_003 + step) * 65_537 + rank) % (1 << 63)


def seed_dropout(seed: int, device: torch.device) -> None:
    """Seed the generator dropout draws from on ``device``.

    Not `torch.manual_seed`: on a CPU-only machine it also queues a lazy CUDA seed, formatting
    the Python stack each time, which costs milliseconds per step.
    """
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def train_step(run: Run, step: int) -> tuple[torch.Tensor, int, torch.Tensor | None, float]:
    """One optimizer step: (summed loss on this rank, its tokens, grad norm or None, lr)."""
    tr = run.spec.training
    lr = lr_at(step, tr.optimizer.lr, tr.schedule, tr.max_steps)
    set_lr(run.optimizer, lr)
    if run.spec.dropout.embedding or run.spec.dropout.attention or run.spec.dropout.residual:
        seed_dropout(dropout_seed(tr.seed, step, run.world.rank), run.world.device)
    micro = run.sampler.step_batches(tr.batch_size, tr.grad_accum, run.world.rank, run.world.size)
    tokens = sum(label_count(b) for b in micro)  # this rank's label tokens in the step
    scaler = run.precision.scaler
    total = torch.zeros((), device=run.world.device)
    for i, batch in enumerate(micro):
        with gradient_sync(run.train_model, enabled=i == len(micro) - 1):
            with run.precision.autocast():
                loss_sum, _ = run.objective(run.train_model, _to_device(batch, run.world.device))
            # Divide by the rank's tokens: accumulation sums micro-batches, DDP/FSDP average ranks.
            loss = loss_sum / tokens
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total += loss_sum.detach()
    if scaler is not None:
        scaler.unscale_(run.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), tr.grad_clip) if tr.grad_clip > 0 else None
    if scaler is not None:
        scaler.step(run.optimizer)
        scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return total, tokens, norm, lr


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """Validation loss (nats/token), perplexity, bits per byte (and `Run.extra_eval`'s figures) on fixed rows."""
    tr = run.spec.training
    world = run.world
    # eval_batches counts global batches, so the windows (and the loss) depend only on the global
    # batch, not on how it is split over processes and micro-batches; every rank runs the same count.
    n_rows = tr.eval_batches * tr.batch_size * tr.grad_accum * world.size
    batches = run.corpus.val_batches(run.spec.train_seq_len, n_rows, tr.batch_size, world.rank, world.size)
    run.model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=world.device)  # (loss sum, tokens)
    try:
        for batch in batches:
            with run.precision.autocast():
                loss_sum, n = run.objective(run.model, _to_device(batch, world.device))
            sums += torch.stack([loss_sum.double(), torch.tensor(float(n), dtype=torch.float64, device=world.device)])
    finally:
        run.model.train()
    loss_sum, count = all_reduce_sum(sums, world).tolist()
    loss = loss_sum / count
    bits_per_byte = loss / (math.log(2) * run.corpus.bytes_per_token("val"))
    figures = {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "bpb": bits_per_byte}
    if run.extra_eval is not None:
        figures.update(run.extra_eval(run))
    return figures


def train_loop(
    run: Run,
    state: TrainState,
    reporter: Reporter,
    metrics: MetricsLog | None,
    on_checkpoint: Callable[[TrainState], None],
    on_eval: Callable[[], None] = lambda: None,
) -> TrainState:
    """Train from ``state.step`` to ``training.max_steps``; ``metrics`` is None on ranks other than 0."""
    tr = run.spec.training
    world = run.world
    run.model.train()
    elapsed_before = state.elapsed_s
    started = time.perf_counter()
    window = torch.zeros(2, dtype=torch.float64, device=world.device)  # (loss sum, tokens) since the last log
    window_time = time.perf_counter()

    def record(split: str, values: dict[str, Any]) -> None:
        state.elapsed_s = elapsed_before + time.perf_counter() - started
        entry = {"split": split, "step": state.step, **values, "tokens": state.tokens, "elapsed_s": state.elapsed_s}
        if metrics is not None:
            metrics.write(entry)

    with reporter, stop_on_interrupt(not world.distributed, reporter.print) as stop:
        while state.step < tr.max_steps:
            loss_sum, tokens, norm, lr = train_step(run, state.step)
            window[0] += loss_sum.double()
            window[1] += tokens
            state.step += 1
            state.tokens += tokens * world.size
            last = state.step == tr.max_steps
            reporter.advance(state.step)
            if state.step % tr.log_every == 0 or last:
                loss_total, token_total = all_reduce_sum(window.clone(), world).tolist()
                seconds = time.perf_counter() - window_time
                speed = token_total / max(seconds, 1e-9)
                loss = loss_total / token_total
                grad_norm = _full(norm).item() if norm is not None else None
                record("train", {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": speed})
                reporter.update(state.step, loss, lr, speed)
                window.zero_()
                window_time = time.perf_counter()
            paused = time.perf_counter()
            if state.step % tr.eval_every == 0 or last:
                val = evaluate(run)
                record("val", val)
                more = f", exact match {100 * val['exact_match']:.1f}%" if "exact_match" in val else ""
                reporter.print(
                    f"step {state.step}: val loss {val['loss']:.4f}, ppl {val['ppl']:.2f}, {val['bpb']:.3f} bits/byte"
                    + more
                )
                on_eval()
            if state.step % tr.checkpoint_every == 0 or last or stop.requested:
                state.elapsed_s = elapsed_before + time.perf_counter() - started
                state.data_rng = run.sampler.state()
                on_checkpoint(state)
            if stop.requested and not last:
                raise Interrupted(state.step)
            window_time += time.perf_counter() - paused  # evaluating and saving is not training speed
    state.elapsed_s = elapsed_before + time.perf_counter() - started
    return state


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP's gradient norm) as a plain tensor."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
