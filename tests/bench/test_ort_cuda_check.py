"""bench/ort_cuda_check.py runs end to end (a smoke test: the script is for a GPU machine, and
``--provider cpu`` runs the same code against the CPU, which must agree with itself exactly)."""

from __future__ import annotations

from bench_support import run_bench


def test_dry_run_on_the_cpu_agrees_and_prints_speeds() -> None:
    args = ["--provider", "cpu", "--size", "micro", "--models", "llama"]
    stdout = run_bench("ort_cuda_check.py", *args)
    lines = stdout.splitlines()
    headers = [line for line in lines if line.startswith("llama ")]
    assert len(headers) == 3 and all("CPUExecutionProvider" in line for line in headers), stdout
    verdicts = [line.split() for line in lines if line.strip().split(" ")[0] in ("greedy", "beam", "sampled")]
    assert len(verdicts) == 9 and all(v[1] == "equal" for v in verdicts), stdout
    speeds = [line for line in lines if "tok/s, first token" in line]
    assert len(speeds) == 6 and all(float(line.split("greedy")[1].split()[0]) > 0 for line in speeds), stdout
