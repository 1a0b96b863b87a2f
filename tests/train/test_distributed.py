"""torchrun with 2 gloo processes trains like one process at the same global batch (DDP and FSDP)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_support import ROOT, invoke, read_metrics, tiny_spec, write_spec

STEPS = 20


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(spec, data, run folder) of a single-process run with batch_size 8."""
    from train_support import shakespeare_text

    folder = tmp_path_factory.mktemp("one")
    data = folder / "data.txt"
    data.write_text(shakespeare_text(), encoding="utf-8")
    spec = write_spec(folder, tiny_spec(max_steps=STEPS, batch_size=8, eval_every=10))
    result = invoke("train", spec, "--data", data, "-o", folder / "run")
    assert result.exit_code == 0, result.output
    return spec, data, folder / "run"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one(tmp_path: Path, one_process: tuple[Path, Path, Path], strategy: str) -> None:
    spec, data, single = one_process
    run_dir = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "nima", "train", str(spec), "--data", str(data), "-o", str(run_dir)]
    cmd += ["--set", "training.batch_size=4", "--set", f"training.distributed={strategy}"]  # 2 x 4 = 8 per step
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{strategy})" in proc.stderr  # the header names the strategy: "cpu x 2 (ddp)"

    two, one = read_metrics(run_dir), read_metrics(single)
    assert [s for s, _ in two] == [s for s, _ in one] == list(range(1, STEPS + 1))
    for (step, a), (_, b) in zip(two, one, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), step
    for (_, a), (_, b) in zip(read_metrics(run_dir, "val"), read_metrics(single, "val"), strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    w2, w1 = load_file(str(run_dir / "model.safetensors")), load_file(str(single / "model.safetensors"))
    assert w2.keys() == w1.keys()
    for name in w1:
        assert torch.allclose(w2[name], w1[name], rtol=1e-4, atol=1e-5), name
    # only rank 0 prints the summary line and writes metrics
    assert proc.stdout.count(str(run_dir)) == 1
    assert len(read_metrics(run_dir)) == STEPS
