"""Time a decode step of Nima's runtime spends outside ONNX Runtime's run, against the least a Python loop can do.

At 10M parameters a step of the ``ort`` graph takes 0.6-1.5 ms on this machine, and every
microsecond of Python around the run is a visible share of it (onnxruntime-genai's loop around
the same run is C++). This script streams batch-1 greedy decodes of 128 tokens after a 32-token
prompt, 2 threads, and reports per step (medians over ``--rounds``):

  nima        `Generator.stream_tokens`: the step's total time, the time inside the session's
              run, and the rest (choosing the token, stopping rules, binding the mask, the
              generator frames)
  bare loop   on the same session and buffers: write the token and position into the bound
              arrays, bind the mask, run, argmax; nothing else (a floor, not a product; ``ort``
              bundles only: a portable bundle's row reads n/a)

Both wrap the session's run with the same timer, so its cost is in both "outside" figures.

A second table decodes a batch of ``--batch`` rows (8; different prompts) through `Generator.generate`,
greedy and sampled (temperature 0.8, top-p 0.9, seeded) in alternating rounds, and reports time per
run and outside the runs; the difference of the two "outside" figures is what sampling (the scores'
processing and the draw for every row) adds to a step, also given as a share of a sampled step.

    .venv/bin/python bench/step_overhead.py [--bundle BUNDLE] [--target ort|portable] [--rounds N] [--batch 8]

Without ``--bundle`` it builds and exports the LLaMA-style tiny model of bench/_models.py (``--target``, ``ort``
by default).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _harness import NEW_TOKENS, PROMPT_TOKENS, THREADS, log
from _models import SIZES, export_model

from nima.layout import ATTENTION_MASK
from nima.runtime import Generator
from nima.runtime.shared_cache import SharedBufferSession


class RunTimer:
    """Stands in for the object the session runs through (`nima.runtime.ort_adapter.session_core`): times
    each run (``run_with_iobinding`` on an ``ort`` bundle's shared buffers, ``run_with_ort_values`` on a
    portable bundle)."""

    def __init__(self, binding: object) -> None:
        self._bound: Callable[..., None] = binding.run_with_iobinding  # type: ignore[attr-defined]
        self._values: Callable[..., object] = binding.run_with_ort_values  # type: ignore[attr-defined]
        self.inside: list[float] = []

    def run_with_iobinding(self, io: object, options: object) -> None:
        start = time.perf_counter()
        self._bound(io, options)
        self.inside.append(time.perf_counter() - start)

    def run_with_ort_values(self, feed: object, names: object, options: object) -> object:
        start = time.perf_counter()
        result = self._values(feed, names, options)
        self.inside.append(time.perf_counter() - start)
        return result


def nima_round(generator: Generator, timer: RunTimer, prompt: list[int]) -> tuple[float, float]:
    """(step, outside the run) in µs, over the single-token steps of one streamed decode."""
    stream = generator.stream_tokens(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    next(stream)  # the prefill
    timer.inside.clear()
    start = time.perf_counter()
    steps = sum(1 for _ in stream)
    total = time.perf_counter() - start
    return total / steps * 1e6, (total - sum(timer.inside)) / steps * 1e6


def bare_round(generator: Generator, timer: RunTimer, prompt: list[int]) -> tuple[float, float]:
    """The same decode with nothing but the writes, the mask binding, the run and an argmax per step."""
    session = generator.session
    if not isinstance(session, SharedBufferSession):
        return float("nan"), float("nan")  # the bare loop is written for an `ort` bundle's shared buffers
    capacity = len(prompt) + NEW_TOKENS
    masks = np.ones((1, capacity), dtype=np.int64)  # (1, capacity)
    cache = session.empty_cache(1, None, capacity)
    ids = np.array([prompt], dtype=np.int64)  # (1, T)
    logits, cache = session.step(ids, masks[:, : len(prompt)], np.arange(len(prompt))[None], cache)
    token, length = int(logits.argmax()), len(prompt) + 1
    session.step(np.array([[token]]), masks[:, :length], np.array([[length - 1]]), cache)  # binds (1, 1) arrays
    io, run = session._io_core, timer.run_with_iobinding  # as `SharedRowStepper` binds them
    ids_buffer, positions, last = session._ids, session._positions, session._logits[0, -1]  # (1, 1), (1, 1), (V,)
    token = int(last.argmax())
    timer.inside.clear()
    start = time.perf_counter()
    for _ in range(NEW_TOKENS - 2):
        ids_buffer[0, 0] = token
        positions[0, 0] = length
        length += 1
        mask = masks[:, :length]
        io.bind_input(ATTENTION_MASK, mask)
        run(io, None)
        token = int(last.argmax())
    total = time.perf_counter() - start
    steps = NEW_TOKENS - 2
    return total / steps * 1e6, (total - sum(timer.inside)) / steps * 1e6


def batch_round(generator: Generator, timer: RunTimer, prompts: list[list[int]], sampled: bool) -> tuple[float, float]:
    """(per run, outside the runs) in µs for one `Generator.generate` of ``prompts`` together: greedy,
    or sampled with temperature 0.8, top-p 0.9 and a seed. Every row runs to ``NEW_TOKENS``."""
    options = {"temperature": 0.8, "top_p": 0.9, "seed": 0} if sampled else {}
    timer.inside.clear()
    start = time.perf_counter()
    generator.generate(prompts, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=sampled, **options)
    total = time.perf_counter() - start
    runs = len(timer.inside)  # one prefill, then a run per step
    return total / runs * 1e6, (total - sum(timer.inside)) / runs * 1e6


def batch_table(generator: Generator, timer: RunTimer, prompt: list[int], rows: int, rounds: int) -> str:
    """Greedy against sampled decoding of ``rows`` prompts at once, alternating: what sampling adds to a
    step, as a report table."""
    prompts = [prompt[i:] + prompt[:i] for i in range(rows)]  # different prompts, same length
    figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for sampled in figures:
        batch_round(generator, timer, prompts, sampled)  # warm-up
    for r in range(rounds):
        for sampled in (False, True) if r % 2 == 0 else (True, False):
            figures[sampled].append(batch_round(generator, timer, prompts, sampled))
    step = {k: statistics.median(s for s, _ in v) for k, v in figures.items()}
    outside = {k: statistics.median(o for _, o in v) for k, v in figures.items()}
    added = outside[True] - outside[False]
    lines = [
        f"\n# Batch of {rows}, `Generator.generate`, {NEW_TOKENS} new tokens per row, medians of {rounds} rounds\n",
        "| decoding | µs per run | outside the runs µs |",
        "|---|---:|---:|",
        f"| greedy | {step[False]:.0f} | {outside[False]:.0f} |",
        f"| sampled (T 0.8, top-p 0.9) | {step[True]:.0f} | {outside[True]:.0f} |",
        f"\nsampling adds {added:.0f} µs per step: {added / step[True]:.1%} of a sampled step",
    ]
    return "\n".join(lines)


def tiny_bundle(root: Path, target: str) -> Path:
    """The LLaMA-style tiny model (seed 0) exported to ``target`` under ``root``."""
    log(f"llama-tiny: build + export (fp32, --target {target})")
    data = {**SIZES["tiny"], "generation": {"do_sample": False}}
    return export_model(data, root, seed=0, target=target, force=True)[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="an exported `ort` bundle (default: build the tiny one)")
    parser.add_argument("--target", choices=["ort", "portable"], default="ort", help="without --bundle: which graph")
    parser.add_argument("--rounds", type=int, default=20, help="decodes per loop, alternating (median)")
    parser.add_argument("--batch", type=int, default=8, help="rows of the greedy / sampled batch table (0: skip)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or tiny_bundle(Path(tmp), args.target)
        generator = Generator(bundle, threads=THREADS)
        timer = RunTimer(generator.session._binding)
        generator.session._binding = timer  # type: ignore[assignment]
        prompt = np.random.default_rng(0).integers(0, generator.spec.vocab_size, PROMPT_TOKENS).tolist()
        loops = {"nima": nima_round, "bare loop": bare_round}
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}
        for loop in loops.values():
            loop(generator, timer, prompt)  # warm-up
        for _ in range(args.rounds):
            for name, loop in loops.items():
                figures[name].append(loop(generator, timer, prompt))
        batch = batch_table(generator, timer, prompt, args.batch, max(3, args.rounds // 4)) if args.batch else ""
    print(f"# Per decode step, batch 1, greedy, {THREADS} threads, medians of {args.rounds} rounds\n")
    print("| loop | step µs | inside the run µs | outside the run µs |")
    print("|---|---:|---:|---:|")
    for name, rounds in figures.items():
        step = statistics.median(s for s, _ in rounds)
        inside = statistics.median(s - o for s, o in rounds)
        outside = statistics.median(o for _, o in rounds)
        if step != step:  # NaN: not run on this bundle
            print(f"| {name} | n/a | n/a | n/a |")
        else:
            print(f"| {name} | {step:.0f} | {inside:.0f} | {outside:.1f} |")
    print(batch)


if __name__ == "__main__":
    main()
