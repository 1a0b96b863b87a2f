"""Training throughput: Nima's model against a plain nanoGPT-style model, same sizes, optimizer and batch.

    .venv/bin/python bench/train.py                    # tiny and small presets, torch's default threads
    .venv/bin/python bench/train.py --presets tiny --threads 1

Both models take the same optimizer (AdamW, fused, Nima's decay groups), the same random
batches and the same step code (forward, cross-entropy, backward, clip, step), so the ratio
measures the model alone. A third column times Nima's own `train_step` (batch sampling from
packed tokens, schedule, loss by token sums), which shows what the loop adds. Rounds
rotate the order of the models and the best round counts, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _nanogpt import ReferenceGPT
from torch import nn

from nima.builders import build_model
from nima.spec import ModelSpec, load_spec, parameter_count, spec_from_dict
from nima.train.data import Corpus
from nima.train.distributed import World
from nima.train.optim import build_optimizer
from nima.train.run import build_run

# preset or spec file -> (sequence length, batch size, steps per round, rounds); small is cut short for a CPU
SETTINGS = {"tiny": (256, 8, 3, 4), "small": (64, 4, 2, 3), "specs/shakespeare-char.yaml": (64, 12, 40, 6)}
ROOT = Path(__file__).resolve().parents[1]


def timed_steps(
    model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], spec: ModelSpec, batches: list[torch.Tensor]
) -> Callable[[], float]:
    """A closure that runs one optimizer step per batch and returns the seconds it took."""
    optimizer = build_optimizer(model, spec.training.optimizer, torch.device("cpu"))

    def run() -> float:
        start = time.perf_counter()
        for batch in batches:  # (B, T+1)
            logits = forward(batch[:, :-1])  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.training.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return run


def loop_steps(spec: ModelSpec, steps: int) -> Callable[[], float]:
    """The same work through `nima.train.loop.train_step` on random packed tokens."""
    from nima.train.loop import train_step

    tokens = np.random.default_rng(0).integers(0, spec.vocab_size, 200_000).astype(np.uint16)
    corpus = Corpus({"train": tokens, "val": tokens[:10_000]}, {"train": 200_000, "val": 10_000}, meta={})
    run = build_run(spec, corpus, World(0, 1, torch.device("cpu")))
    counter = iter(range(10**9))

    def go() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            train_step(run, next(counter))
        return time.perf_counter() - start

    return go


def bench(preset: str) -> dict[str, float]:
    seq_len, batch, steps, rounds = SETTINGS[preset]
    training = [f"training.seq_len={seq_len}", f"training.batch_size={batch}"]
    spec = (
        load_spec(ROOT / preset, training)
        if preset.endswith(".yaml")
        else spec_from_dict({"extends": preset}, overrides=training)
    )
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, spec.vocab_size, (batch, seq_len + 1), generator=gen) for _ in range(steps)]
    nima_model = build_model(spec, seed=0)
    reference = ReferenceGPT(spec)
    contenders = {
        "nima": timed_steps(nima_model, lambda x: nima_model(x)[0], spec, batches),
        "reference": timed_steps(reference, reference, spec, batches),
        "nima train_step": loop_steps(spec, steps),
    }
    for run in contenders.values():  # warm-up: allocator, kernels, lazy imports
        run()
    best = {name: math.inf for name in contenders}
    names = list(contenders)
    for i in range(rounds):
        for name in names[i % 3 :] + names[: i % 3]:  # rotate: no contender always runs first
            best[name] = min(best[name], contenders[name]())
    tokens = batch * seq_len * steps
    return {
        "params": parameter_count(spec),
        "tokens_per_step": batch * seq_len,
        **{name: tokens / seconds for name, seconds in best.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, fp32; best of several rotated rounds")
    header = f"{'model':16} {'params':>8} {'batch x T':>10} {'nima tok/s':>11} {'nanoGPT tok/s':>14} {'ratio':>6}"
    print(header + f" {'nima train_step tok/s':>22}")
    for preset in args.presets:
        seq_len, batch, _, _ = SETTINGS[preset]
        r = bench(preset)
        print(
            f"{Path(preset).stem:16} {r['params'] / 1e6:>7.1f}M {f'{batch} x {seq_len}':>10} {r['nima']:>11,.0f} "
            f"{r['reference']:>14,.0f} {r['nima'] / r['reference']:>5.2f}x {r['nima train_step']:>22,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
