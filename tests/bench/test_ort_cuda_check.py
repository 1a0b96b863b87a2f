"""bench/ort_cuda_check.py runs end to end (a smoke test: the script is for a GPU machine, and
``--provider cpu`` runs the same code against the CPU, which must agree with itself exactly)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_dry_run_on_the_cpu_agrees_and_prints_speeds() -> None:
    args = ["--provider", "cpu", "--size", "micro", "--models", "llama"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "ort_cuda_check.py"), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    headers = [line for line in lines if line.startswith("llama ")]
    assert len(headers) == 3 and all("CPUExecutionProvider" in line for line in headers), done.stdout
    verdicts = [line.split() for line in lines if line.strip().split(" ")[0] in ("greedy", "beam", "sampled")]
    assert len(verdicts) == 9 and all(v[1] == "equal" for v in verdicts), done.stdout
    speeds = [line for line in lines if "tok/s, first token" in line]
    assert len(speeds) == 6 and all(float(line.split("greedy")[1].split()[0]) > 0 for line in speeds), done.stdout
