"""Nima's runtime against onnxruntime-genai with each runtime in its own process, as deployed.

bench/decode.py times every runner in one process, and there the runtimes do not run alike: which
session was created first moves Nima / genai by 3-8% at 124M parameters (docs/performance.md), an
effect of sharing the process that no deployment has. Timing fresh processes one after another
instead leaves the machine's drift in the ratio: on this shared machine a process decoding the 124M
model ran at 69 or at 90 tok/s depending on the minute.

So this script starts pairs of processes, one running Nima's `Generator` and one onnxruntime-genai
on the same bundle (which starts first alternates between pairs). Each loads the bundle and warms
up; then the two take turns (ABBA), each decoding batch-1 greedy 128 new tokens after a 32-token
prompt (2 threads) when told to, while the other waits. Each turn reports decode tokens/s over the
127 single-token steps and time to first token; the ratio of a round is taken between turns seconds
apart. Both runtimes must produce the same tokens.

Each turn decodes twice and times the second. At 10M parameters the 37 MB of weights nearly fit this
CPU's 32 MB L3 cache, and a process decoding right after the other one ran 30-50% slower than one
decoding right after itself (the other's weights fill the cache, and it takes more than a generation
for its own to win it back): timing the first decode of a turn compared a cold runtime with a warm
one in every round. The untimed decode puts each timed one in the state of a deployment decoding
without pause. At 124M (500 MB of weights) the cache holds little of either.

It prints each pair's median ratio, the median of those with a distribution-free 95% confidence
interval (order statistics over the pairs, the independent samples; no assumption about their
spread), and the median of every round's ratio. The processes import no torch.

.venv/bin/python bench/processes.py [--models llama-tiny llama-small] [--target ort|portable]
[--pairs 6] [--rounds 10] [--keep DIR] [--runtimes A B]

``--runtimes`` picks the two compared (first / second) from ``nima`` (`Generator`'s defaults, which
put the weights on 2 MB pages), ``nima-huge-pages`` and ``nima-4k-pages`` (``huge_pages=True`` /
``False``) and ``genai``; ``nima genai`` by default.

Progress goes to stderr, the report to stdout."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _harness import NEW_TOKENS, PROMPT_TOKENS, SEED, THREADS, log, pin_genai_config, unused_token

RUNTIMES = ("nima", "nima-huge-pages", "nima-4k-pages", "genai")  # --runtimes: the two compared

# (prompt, new tokens) -> (tokens, time to first token, time for the rest), seconds
Decode = Callable[[list[int], int], tuple[list[int], float, float]]


def _nima_decode(bundle: str, huge_pages: bool | None = None) -> Decode:
    """Nima's `Generator` with its defaults, or with ``huge_pages`` forced on or off."""
    from nima.runtime import Generator

    pages = {} if huge_pages is None else {"huge_pages": huge_pages}
    generator = Generator(bundle, threads=THREADS, **pages)

    def decode(prompt: list[int], new: int) -> tuple[list[int], float, float]:
        start = time.perf_counter()
        stream = generator.stream_tokens(prompt, max_new_tokens=new, do_sample=False)
        tokens = [next(stream)]
        first = time.perf_counter()
        tokens.extend(stream)
        return tokens, first - start, time.perf_counter() - first

    return decode


def _genai_decode(bundle: str) -> Decode:
    """`_genai.genai_runner`'s loop (imported here: only the genai process loads onnxruntime-genai)."""
    from _genai import genai_runner

    runner = genai_runner("genai", Path(bundle))

    def decode(prompt: list[int], new: int) -> tuple[list[int], float, float]:
        timing = runner.run(prompt, new)
        return timing.tokens, timing.ttft, timing.total - timing.ttft

    return decode


def child(runtime: str, bundle: str, vocab: int) -> None:
    """Runs in the child process: loads and warms up, then for each line read from stdin decodes
    twice, untimed then timed, and prints JSON with the decode tokens/s, the time to first token
    and the tokens of the timed run."""
    pages = {"nima": None, "nima-huge-pages": True, "nima-4k-pages": False}  # None: the Generator's default
    decode = _genai_decode(bundle) if runtime == "genai" else _nima_decode(bundle, pages[runtime])
    prompt = np.random.default_rng(SEED).integers(0, vocab, PROMPT_TOKENS).tolist()
    decode(prompt, 16)  # warm-up: allocates, picks kernels, touches every weight
    print("ready", flush=True)
    for _ in sys.stdin:
        decode(prompt, NEW_TOKENS)  # untimed: the other process's run has evicted this one's weights from L3
        tokens, ttft, rest = decode(prompt, NEW_TOKENS)
        print(json.dumps({"tps": (len(tokens) - 1) / rest, "ttft": ttft, "tokens": tokens}), flush=True)


class Child:
    """A runtime in its own process, decoding when asked (see `child`)."""

    def __init__(self, runtime: str, bundle: Path, vocab: int) -> None:
        command = [sys.executable, __file__, "--child", runtime, str(bundle), str(vocab)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._line() != "ready":
            raise RuntimeError(f"the {runtime} process did not start")

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def decode(self) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median: the order statistics ``j`` from
    each end, ``j`` the largest with P(Binomial(n, 1/2) < j) <= (1 - level) / 2."""
    ordered, n = sorted(values), len(values)
    tail, j = 0.0, 0
    while j < n // 2:
        tail += math.comb(n, j) / 2**n
        if tail > (1 - level) / 2:
            break
        j += 1
    if j == 0:
        return float("-inf"), float("inf")  # too few pairs for this level
    return ordered[j - 1], ordered[n - j]


def bench_model(name: str, root: Path, target: str, pairs: int, rounds: int, runtimes: tuple[str, str]) -> None:
    """Export model ``name`` and time ``runtimes`` in ``pairs`` pairs of processes; prints a table row
    per pair and the summary line."""
    from _models import MODELS, export_model  # here, not at the top: the runtime processes need neither

    log(f"{name}: build + export (fp32, {target})")
    data = {**MODELS[name], "generation": {"do_sample": False}}
    bundle, spec = export_model(data, root / name, target=target, force=True)
    probe = Child("nima", bundle, spec.vocab_size)
    reference = probe.decode()["tokens"]
    probe.close()
    prompt = np.random.default_rng(SEED).integers(0, spec.vocab_size, PROMPT_TOKENS).tolist()
    pin_genai_config(bundle, unused_token(prompt + reference, spec.vocab_size))
    a, b = runtimes
    pair_ratios, all_ratios, figures = [], [], {runtime: [] for runtime in runtimes}
    for pair in range(pairs):
        log(f"{name}: process pair {pair + 1}/{pairs}")
        started = runtimes if pair % 2 == 0 else runtimes[::-1]
        children = {runtime: Child(runtime, bundle, spec.vocab_size) for runtime in started}
        ratios = []
        for turn in range(rounds):
            order = runtimes if turn % 2 == 0 else runtimes[::-1]
            got = {runtime: children[runtime].decode() for runtime in order}
            for runtime in runtimes:
                if got[runtime]["tokens"] != reference:
                    print(f"{name}: {runtime}'s greedy tokens differ from Nima's first run", file=sys.stderr)
                    sys.exit(1)
                figures[runtime].append(got[runtime])
            ratios.append(got[a]["tps"] / got[b]["tps"])
        for process in children.values():
            process.close()
        pair_ratios.append(statistics.median(ratios))
        all_ratios.extend(ratios)
        tps = {runtime: statistics.median(f["tps"] for f in figures[runtime][-rounds:]) for runtime in runtimes}
        ttft = {runtime: statistics.median(f["ttft"] for f in figures[runtime][-rounds:]) for runtime in runtimes}
        print(
            f"| {name} | {pair + 1} | {' then '.join(started)} | {tps[a]:.1f} | {tps[b]:.1f} | "
            f"{1e3 * ttft[a]:.1f} | {1e3 * ttft[b]:.1f} | {pair_ratios[-1]:.3f}x |",
            flush=True,
        )
    low, high = median_interval(pair_ratios)
    quartiles = statistics.quantiles(all_ratios, n=4)
    tps = {runtime: statistics.median(f["tps"] for f in figures[runtime]) for runtime in runtimes}
    print(
        f"\n{name} ({target}): {a} / {b}, median of {pairs} process pairs' medians "
        f"**{statistics.median(pair_ratios):.3f}x** (95% interval {low:.3f}-{high:.3f}; {a} faster in "
        f"{sum(r > 1 for r in pair_ratios)} of {pairs} pairs); all {len(all_ratios)} rounds: median "
        f"{statistics.median(all_ratios):.3f}x, middle half {quartiles[0]:.3f}-{quartiles[2]:.3f}; "
        f"medians {tps[a]:.1f} and {tps[b]:.1f} tok/s\n",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child(argv[1], argv[2], int(argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["llama-tiny", "llama-small"])
    parser.add_argument("--target", choices=["ort", "portable"], default="ort", help="the bundle's export target")
    parser.add_argument("--pairs", type=int, default=6, help="process pairs per model, started in ABBA order")
    parser.add_argument("--rounds", type=int, default=10, help="alternating timed generations per pair (ABBA)")
    parser.add_argument("--keep", type=Path, help="keep models and bundles here")
    parser.add_argument(
        "--runtimes",
        nargs=2,
        choices=RUNTIMES,
        default=["nima", "genai"],
        metavar="RUNTIME",
        help=f"the two runtimes compared, first / second (of {', '.join(RUNTIMES)}; default: nima genai)",
    )
    args = parser.parse_args(argv)
    a, b = args.runtimes
    if a == b:
        parser.error("--runtimes: name two different runtimes")
    root = args.keep or Path(tempfile.mkdtemp(prefix="nima-processes-"))
    print(
        f"# {a} / {b}, one runtime per process, batch-1 greedy, {NEW_TOKENS} new tokens, "
        f"fp32, {args.target} bundle, {THREADS} threads\n\n"
        f"| model | pair | started | {a} tok/s | {b} tok/s | {a} TTFT ms | {b} TTFT ms | {a} / {b}, median |\n"
        "|---|---:|---|---:|---:|---:|---:|---:|",
        flush=True,
    )
    for name in args.models:
        bench_model(name, root, args.target, args.pairs, args.rounds, (a, b))


if __name__ == "__main__":
    main()
