"""What 2 MB pages for the weights are worth to Nima's runtime, one `Generator` per process.

For each model (``--models``, from bench/_models.py's list; seeded random weights, fp32 ``ort``
bundle), this script starts pairs of fresh processes, one with ``Generator(...,
huge_pages=True)`` and one with ``huge_pages=False``, alternating which goes
first (ABBA), each timing batch-1 greedy decoding of 128 new tokens after a 32-token prompt
(``--rounds`` times, median), 2 threads. It prints each pair's ratio, their median, and in how
many pairs huge pages were faster, the memory each process had on huge pages, and the seconds
each took to construct its `Generator` (the collapse runs on a thread after it, which the child waits
for before timing).

Why separate processes: a deployment runs one model per process, and two sessions in one process
do not run alike once one has huge pages (the one created first decoded 8-16% faster than the
other, whichever had them; two without decoded alike), so the in-process comparison of
bench/decode.py (``--runners genai "nima huge pages"``) mixes that in. Processes differ from
one another too, so this takes many pairs.

    .venv/bin/python bench/huge_pages.py [--models llama-tiny llama-small] [--pairs 6] [--rounds 4] [--keep DIR]

Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import NEW_TOKENS, PROMPT_TOKENS, SEED, THREADS, log  # the child imports no torch


def child(bundle: str, huge: bool, rounds: int) -> None:
    """Runs in the child process: prints tokens/s (median of ``rounds``), MB on huge pages and
    the seconds `Generator` took to load."""
    from nima.runtime import Generator
    from nima.runtime.huge_pages import settle

    start = time.perf_counter()
    generator = Generator(bundle, threads=THREADS, huge_pages=huge)
    load = time.perf_counter() - start
    settle()  # the collapse runs on a thread after loading: the timed decodes compare the pages, not the thread
    prompt = np.random.default_rng(SEED).integers(0, generator.spec.vocab_size, PROMPT_TOKENS).tolist()
    options = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
    generator.generate([prompt], **{**options, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
    speeds = []
    for _ in range(rounds):
        start = time.perf_counter()
        generator.generate([prompt], **options)
        speeds.append(NEW_TOKENS / (time.perf_counter() - start))
    smaps = Path("/proc/self/smaps").read_text().splitlines() if sys.platform.startswith("linux") else []
    huge_kb = sum(int(line.split()[1]) for line in smaps if line.startswith("AnonHugePages:"))
    print(f"{statistics.median(speeds)} {huge_kb / 1024} {load}")


def measure(bundle: Path, huge: bool, rounds: int) -> tuple[float, float, float]:
    """(tokens/s, MB on huge pages, load seconds) of one fresh process."""
    out = (
        subprocess.run(
            [sys.executable, __file__, "--child", str(bundle), "on" if huge else "off", str(rounds)],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
        .split()
    )  # the child's report is its last line
    return float(out[0]), float(out[1]), float(out[2])


def bench_model(name: str, root: Path, pairs: int, rounds: int) -> None:
    """Export model ``name`` to an ``ort`` bundle and time ``pairs`` pairs of processes with and
    without huge pages; prints a table row per pair and the summary line."""
    from _models import MODELS, export_model  # here, not at the top: the runtime processes need neither

    log(f"{name}: build + export (fp32, ort)")
    bundle, _ = export_model(MODELS[name], root / name, target="ort", force=True)
    print(
        "\n| model | pair | tok/s, huge pages | tok/s, 4 KB pages | ratio | load s, huge | load s, 4 KB |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    ratios, on_mb, off_mb, loads = [], [], [], {True: [], False: []}
    for pair in range(pairs):
        log(f"{name}: pair {pair + 1}/{pairs}")
        order = (True, False) if pair % 2 == 0 else (False, True)
        speed = {}
        for huge in order:
            speed[huge], mb, load = measure(bundle, huge, rounds)
            (on_mb if huge else off_mb).append(mb)
            loads[huge].append(load)
        ratios.append(speed[True] / speed[False])
        print(
            f"| {name} | {pair + 1} | {speed[True]:.1f} | {speed[False]:.1f} | {ratios[-1]:.3f}x | "
            f"{loads[True][-1]:.2f} | {loads[False][-1]:.2f} |",
            flush=True,
        )
    faster = sum(r > 1 for r in ratios)
    print(
        f"\n{name}: huge pages / 4 KB pages, median of {pairs} pairs {statistics.median(ratios):.3f}x "
        f"(range {min(ratios):.3f}-{max(ratios):.3f}), faster in {faster} of {pairs}; "
        f"on huge pages: {statistics.median(on_mb):.0f} MB with, {statistics.median(off_mb):.0f} MB without; "
        f"loading, median: {statistics.median(loads[True]):.2f} s with, "
        f"{statistics.median(loads[False]):.2f} s without\n"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child(argv[1], argv[2] == "on", int(argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["llama-tiny", "llama-small"])
    parser.add_argument("--pairs", type=int, default=6, help="process pairs per model (ABBA order)")
    parser.add_argument("--rounds", type=int, default=4, help="timed generations per process (median)")
    parser.add_argument("--keep", type=Path, help="keep models and bundles here")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="nima-huge-pages-"))
    print("# 2 MB pages for the weights: one Generator per process, batch-1 greedy, 128 new tokens, fp32, ort bundle")
    for name in args.models:
        bench_model(name, root, args.pairs, args.rounds)


if __name__ == "__main__":
    main()
