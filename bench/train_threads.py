"""Training step time on the CPU by torch thread count: what `training.cpu_threads` should default to.

Runs `nima train` on a spec (shakespeare-char by default) for a few hundred steps with each
thread count in turn, alternating, in fresh processes, and reports the median milliseconds per
step after the first steps (from the run's metrics.jsonl) with the 1-minute load average seen
before each run, so a figure taken while other work ran shows as such.

    cd bench && ../.venv/bin/python train_threads.py [--threads 1 2] [--steps 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import log

ROOT = Path(__file__).resolve().parents[1]


def step_ms(spec: Path, data: Path, threads: int, steps: int) -> float:
    """Median ms per step of one run, skipping the first tenth (warm-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        overrides = [
            f"training.max_steps={steps}",
            f"training.cpu_threads={threads}",
            f"training.eval_every={steps * 10}",
            f"training.checkpoint_every={steps * 10}",
            "training.log_every=10",
        ]
        command = [sys.executable, "-m", "nima", "train", str(spec), "--data", str(data), "-o", str(run)]
        for item in overrides:
            command += ["--set", item]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=3600)
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [entry for entry in lines if entry["split"] == "train"]
    pairs = list(zip(train, train[1:], strict=False))[len(train) // 10 :]
    return statistics.median(1000 * (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "shakespeare-char.yaml")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[int, list[float]] = {n: [] for n in args.threads}
    loads: dict[int, list[float]] = {n: [] for n in args.threads}
    for r in range(args.rounds):
        order = args.threads if r % 2 == 0 else list(reversed(args.threads))
        for threads in order:
            loads[threads].append(os.getloadavg()[0])
            times[threads].append(step_ms(args.spec, args.data, threads, args.steps))
            log(f"round {r + 1}: {threads} threads {times[threads][-1]:.1f} ms/step")
    base = statistics.median(times[args.threads[0]])
    print(f"{args.spec.name}, {args.steps} steps, {os.cpu_count()} CPUs, median of {args.rounds} runs each")
    print(f"| threads | ms / step | vs {args.threads[0]} thread(s) | load average before runs |")
    print("|---|---|---|---|")
    for threads in args.threads:
        ms = statistics.median(times[threads])
        load = ", ".join(f"{x:.1f}" for x in loads[threads])
        print(f"| {threads} | {ms:.1f} | {base / ms:.2f}x | {load} |")


if __name__ == "__main__":
    main()
