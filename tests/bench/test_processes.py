"""bench/processes.py: its confidence interval for a median, and its runtime processes taking turns."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from nima.builders import build_model, save_build
from nima.export.command import export_bundle
from nima.spec import spec_from_dict

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    """Import bench/processes.py by path: bench/ is a folder of scripts, not an installed package."""
    spec = importlib.util.spec_from_file_location("nima_bench_processes", BENCH / "processes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


processes = _load()


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
    spec = spec_from_dict(
        {
            "name": "bench-processes",
            "vocab_size": 64,
            "max_seq_len": 256,  # the script's 32-token prompt and 128 new tokens
            "d_model": 64,
            "n_layers": 2,
            "attention": {"n_heads": 4, "n_kv_heads": 2},
            "ffn": {"kind": "swiglu", "hidden": 128},
            "position": {"kind": "rope"},
            "norm": {"kind": "rmsnorm"},
        }
    )
    source = save_build(build_model(spec, seed=0), spec, tmp_path / "src")
    bundle = export_bundle(source, tmp_path / "bundle", target="ort", verify=False).out
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
