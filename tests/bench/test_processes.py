"""bench/processes.py: its confidence interval for a median, and its runtime processes taking turns."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from bench_support import load_bench, small_bundle

processes = load_bench("processes")


def _coverage(n: int, j: int) -> float:
    """P(X_(j) <= median <= X_(n-j+1)) for n samples of any continuous distribution: the number of
    samples below the median is Binomial(n, 1/2), and the interval misses when it is < j or > n - j."""
    miss = sum(math.comb(n, k) for k in range(n + 1) if k < j or k > n - j) / 2**n
    return 1 - miss


@pytest.mark.parametrize("n", [6, 8, 12, 20, 40])
def test_the_median_interval_is_the_narrowest_order_statistic_pair_with_95_percent_coverage(n: int) -> None:
    values = list(np.random.default_rng(n).permutation(np.arange(1.0, n + 1)))  # the order statistics are 1..n
    low, high = processes.median_interval(values)
    j = int(low)
    assert high == n - j + 1, "symmetric in the order statistics"
    assert _coverage(n, j) >= 0.95
    assert _coverage(n, j + 1) < 0.95, "a narrower pair would still have been valid"


def test_too_few_samples_give_no_interval() -> None:
    assert processes.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == (float("-inf"), float("inf"))


def test_the_two_runtime_processes_take_turns_and_agree(tmp_path: Path) -> None:
    """A Nima and an onnxruntime-genai process on one small bundle: each decodes when told, with
    the same greedy tokens, and reports a speed and a time to first token."""
    bundle, spec = small_bundle(tmp_path, "ort")
    nima = processes.Child("nima", bundle, spec.vocab_size)
    first = nima.decode()
    config_path = bundle / "genai_config.json"
    config = json.loads(config_path.read_text())
    used = set(first["tokens"]) | set(np.random.default_rng(processes.SEED).integers(0, 64, 32).tolist())
    config["model"]["eos_token_id"] = next(t for t in range(64) if t not in used)  # no early stop
    config["search"]["max_length"] = processes.PROMPT_TOKENS + processes.NEW_TOKENS
    config_path.write_text(json.dumps(config))
    genai = processes.Child("genai", bundle, spec.vocab_size)
    try:
        turns = [genai.decode(), nima.decode(), genai.decode()]
    finally:
        nima.close()
        genai.close()
    assert len(first["tokens"]) == processes.NEW_TOKENS
    assert all(turn["tokens"] == first["tokens"] for turn in turns)
    assert all(turn["tps"] > 0 and 0 < turn["ttft"] < 60 for turn in [first, *turns])
    assert nima.process.returncode == genai.process.returncode == 0
