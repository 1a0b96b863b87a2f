"""Resuming: a run killed with SIGKILL after a checkpoint, or stopped with Ctrl-C, then `--resume`d, ends where an
uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_support import ROOT, invoke, read_metrics, tiny_spec, write_spec

from nima.layout import host
from nima.train.checkpoint import checkpoint_steps

STEPS = 300


def _kill_after_first_checkpoint(spec: Path, corpus: Path, run_dir: Path) -> int:
    """Start `nima train` in a subprocess, SIGKILL it as soon as a checkpoint exists; the step it had reached."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "nima", "train", str(spec), "--data", str(corpus), "-o", str(run_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not checkpoint_steps(run_dir):
            if proc.poll() is not None:
                pytest.fail(f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint appeared within 120 s")
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return max(step for step, _ in checkpoint_steps(run_dir))


def _resume_equals_an_uninterrupted_run(spec: Path, corpus: Path, run: Path, reached: int, straight: Path) -> None:
    """`--resume` ``run`` from step ``reached``; its weights and metrics must equal a run trained
    from scratch without a stop (in ``straight``)."""
    resumed = invoke("train", spec, "-o", run, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming at step {reached}" in resumed.output

    done = invoke("train", spec, "--data", corpus, "-o", straight)
    assert done.exit_code == 0, done.output

    a = load_file(str(run / "model.safetensors"))
    b = load_file(str(straight / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bitwise: the same arithmetic in the same order
    # metrics.jsonl: every step once, the same losses (steps after the checkpoint were trained again)
    assert read_metrics(run) == read_metrics(straight)
    assert [s for s, _ in read_metrics(run)] == list(range(1, STEPS + 1))
    assert read_metrics(run, "val") == read_metrics(straight, "val")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path: Path, corpus: Path) -> None:
    spec = write_spec(tmp_path, tiny_spec(max_steps=STEPS, checkpoint_every=10, eval_every=100))

    killed = tmp_path / "killed"
    reached = _kill_after_first_checkpoint(spec, corpus, killed)
    assert reached < STEPS, "the run finished before the kill"
    # what a kill while a checkpoint is being written leaves: the half-written step's staging folder,
    # named after its (now dead) process; the resumed run must clear it
    ended = subprocess.Popen(["true"])
    ended.wait()  # its pid: one no process has now
    half = killed / "checkpoints" / f".step-{reached + 5:06d}.{ended.pid}-{host()}.k1.partial"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"half a file")

    _resume_equals_an_uninterrupted_run(spec, corpus, killed, reached, tmp_path / "straight")
    assert not [p for p in (killed / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_ctrl_c_saves_a_checkpoint_and_resume_equals_an_uninterrupted_run(tmp_path: Path, corpus: Path) -> None:
    """The first SIGINT stops the run after its current step with a checkpoint of that step (none is
    scheduled before the end here), exit 130; resuming from it ends where an uninterrupted run ends."""
    spec = write_spec(tmp_path, tiny_spec(max_steps=STEPS, checkpoint_every=STEPS, eval_every=100))
    stopped = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "nima", "train", str(spec), "--data", str(corpus), "-o", str(stopped)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not ((stopped / "metrics.jsonl").exists() and read_metrics(stopped)):  # training has started
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"training ended or never started: {proc.stderr.read()[-2000:]}")
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    (reached,) = [step for step, _ in checkpoint_steps(stopped)]
    assert 0 < reached < STEPS
    assert f"{stopped}: interrupted at step {reached}; its checkpoint is saved" in stderr
    assert "Traceback" not in stderr
    assert not [p for p in (stopped / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporaries left

    _resume_equals_an_uninterrupted_run(spec, corpus, stopped, reached, tmp_path / "straight")


def test_resume_can_extend_a_finished_run(tmp_path: Path, corpus: Path) -> None:
    spec = write_spec(tmp_path, tiny_spec(max_steps=10))
    assert invoke("train", spec, "--data", corpus, "-o", tmp_path / "run").exit_code == 0
    again = invoke("train", spec, "-o", tmp_path / "run", "--resume")
    assert again.exit_code == 0 and "already at step 10" in again.output
    longer = invoke("train", spec, "-o", tmp_path / "run", "--resume", "--set", "training.max_steps=20")
    assert longer.exit_code == 0, longer.output
    assert [s for s, _ in read_metrics(tmp_path / "run")][-1] == 20
