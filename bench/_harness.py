"""The timing harness the decode benchmarks share: settings, runners, interleaved rounds, medians.

A runner (`Runner`) is a loaded model and a function that decodes greedily from a prompt and
returns a `Timing`. `time_balanced` times several runners against each other: a warm-up run each,
then rounds in which every runner decodes once (a different one first in each round), half the
rounds on runners created in the given order and half on fresh ones created in the reverse order,
and the median decode tokens/s and time to first token of each (`Result`). Interleaving spreads
other load on the machine over all runners alike; `timed` also records the share of the CPUs
other processes took during a run, so a report can say how far to trust a figure.

The settings below are module attributes that a script may change from its command line before
timing (``_harness.RUNS = args.runs``): the functions here read them when called. Read them as
``_harness.THREADS`` elsewhere, not through ``from _harness import THREADS``, where a script
changes them.

This module imports the standard library only, so a process that times a deployment (bench/
processes.py's children) can use it without loading torch.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROMPT_TOKENS = 32
NEW_TOKENS = 128
WARMUP_TOKENS = 16  # the warm-up run: enough to allocate, pick kernels and touch every weight
THREADS = 2
RUNS = 3
SEED = 0


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def compile_nima() -> None:
    """Write the bytecode of Nima's modules, as ``pip install`` does for an installed package.

    A benchmark that times loading in fresh processes must not time Python compiling Nima's source:
    an editable install (``pip install -e``) under ``PYTHONDONTWRITEBYTECODE`` (set on this project's
    machines) compiles every module in every process, 20 ms of a 0.17 s load at 124M, where the
    engines it is compared with are installed wheels whose bytecode pip wrote at install."""
    import compileall

    import nima

    compileall.compile_dir(Path(nima.__file__).parent, quiet=1)


def unused_token(tokens: list[int], vocab: int) -> int:
    """The smallest id greedy decoding never produces: the end-of-sequence id, so no run stops early."""
    used = set(tokens)
    return next(t for t in range(vocab) if t not in used)


def pin_genai_config(folder: Path, eos: int) -> None:
    """Same search and thread settings on every genai config: greedy, `THREADS` intra-op threads, our eos."""
    path = folder / "genai_config.json"
    config = json.loads(path.read_text())
    config["model"]["eos_token_id"] = eos
    session = config["model"]["decoder"].setdefault("session_options", {})
    session["intra_op_num_threads"] = THREADS
    session["inter_op_num_threads"] = 1
    config["search"]["do_sample"] = False
    config["search"]["max_length"] = PROMPT_TOKENS + NEW_TOKENS
    path.write_text(json.dumps(config, indent=2) + "\n")


@dataclass
class Timing:
    """One generation: the new tokens, time to first token and total time (seconds)."""

    tokens: list[int]
    ttft: float
    total: float
    others: float | None = None  # share of the machine's CPU time other processes used meanwhile

    @property
    def decode_tps(self) -> float:
        """Tokens per second after the first: each of these costs one single-token model run."""
        return (len(self.tokens) - 1) / (self.total - self.ttft)


@dataclass
class Result:
    """A runner's median figures over the timed runs."""

    label: str
    tokens: list[int]
    decode_tps: float
    ttft_ms: float
    runs: list[Timing] = field(default_factory=list)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median decode tokens/s over the timed runs: how noisy the figure is."""
        tps = [t.decode_tps for t in self.runs]
        return (max(tps) - min(tps)) / self.decode_tps

    @property
    def others(self) -> float | None:
        """The largest share of the CPUs that other processes took during a timed run."""
        shares = [t.others for t in self.runs if t.others is not None]
        return max(shares) if shares else None


@dataclass
class Runner:
    """A loaded model and how to generate with it; ``close`` releases the session."""

    label: str
    run: Callable[[list[int], int], Timing]
    close: Callable[[], None]


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat); None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def timed(runner: Runner, prompt: list[int]) -> Timing:
    """One full generation, with the share of the CPUs other processes took meanwhile."""
    busy, own, wall = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    timing = runner.run(prompt, NEW_TOKENS)
    busy_after = busy_cpu_seconds()
    if busy is not None and busy_after is not None:
        theirs = (busy_after - busy) - (time.process_time() - own)
        timing.others = max(0.0, theirs) / ((time.perf_counter() - wall) * (os.cpu_count() or 1))
    return timing


def time_all(runners: list[Runner], prompt: list[int]) -> list[Result]:
    """A short warm-up run each, then `RUNS` rounds that run every runner once, in rotating order.

    Interleaving the runners, rather than timing one after the other, spreads whatever else the
    machine does over all of them alike; the medians then compare like with like.
    """
    for runner in runners:
        log(f"warm-up {runner.label}")
        runner.run(prompt, WARMUP_TOKENS)  # first-run allocations, kernel selection, weights paged in
    timings: dict[str, list[Timing]] = {r.label: [] for r in runners}
    for round_ in range(RUNS):
        log(f"timed round {round_ + 1}/{RUNS}")
        for turn in range(len(runners)):  # a different runner first in each round
            runner = runners[(round_ + turn) % len(runners)]
            timings[runner.label].append(timed(runner, prompt))
    results = []
    for label, runs in timings.items():
        if any(t.tokens != runs[0].tokens for t in runs):
            raise RuntimeError(f"{label}: greedy tokens differ between runs")
        results.append(
            Result(
                label=label,
                tokens=runs[0].tokens,
                decode_tps=statistics.median(t.decode_tps for t in runs),
                ttft_ms=1000 * statistics.median(t.ttft for t in runs),
                runs=runs,
            )
        )
    return results


def time_balanced(makers: dict[str, Callable[[], Runner]], prompt: list[int]) -> list[Result]:
    """`time_all` over half the rounds with the runners created in the given order, half with them
    created in reverse order, fresh each time; the rounds are then pooled.

    The order in which sessions are created moves their speed: with Nima's and genai's sessions
    in one process, the one created second decoded about 5% faster at 124M parameters (three
    pairs of processes each way: Nima / genai 0.948-0.979x created first, 1.002-1.027x second).
    Balancing the order keeps that out of the ratios."""
    global RUNS  # time_all reads it
    total = RUNS
    halves = [(list(makers), (total + 1) // 2), (list(reversed(makers)), total // 2)]
    pooled: dict[str, list[Timing]] = {label: [] for label in makers}
    for order, rounds in halves:
        if rounds == 0:
            continue
        runners = [makers[label]() for label in order]
        RUNS = rounds
        try:
            for result in time_all(runners, prompt):
                pooled[result.label] += result.runs
        finally:
            RUNS = total
            for runner in runners:
                runner.close()
            del runners
            gc.collect()  # the sessions' weights go before the next half's are loaded
    results = []
    for label, runs in pooled.items():
        if any(t.tokens != runs[0].tokens for t in runs):
            raise RuntimeError(f"{label}: greedy tokens differ between runs")
        decode = statistics.median(t.decode_tps for t in runs)
        ttft = 1000 * statistics.median(t.ttft for t in runs)
        results.append(Result(label=label, tokens=runs[0].tokens, decode_tps=decode, ttft_ms=ttft, runs=runs))
    return results
