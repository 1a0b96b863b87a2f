"""Helpers of the training tests: a tiny char-level spec, a slice of tinyshakespeare, CLI runners.

Imported by name (pytest puts this folder on sys.path); the fixtures live in conftest.py."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from click.testing import Result
from typer.testing import CliRunner

from nima.cli import app
from nima.spec import spec_from_dict
from nima.train.data import Corpus, encode_splits, split_text
from nima.train.distributed import World
from nima.train.loop import Run
from nima.train.run import build_run
from nima.train.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

# d_model 32, 2 layers, context 16: a training step takes a few milliseconds on one thread.
TINY: dict[str, Any] = {
    "name": "tiny-char",
    "vocab_size": 96,
    "max_seq_len": 16,
    "d_model": 32,
    "n_layers": 2,
    "attention": {"n_heads": 4},
    "ffn": {"kind": "gelu", "hidden": 64},
    "position": {"kind": "learned"},
    "training": {
        "tokenizer": "char",
        "batch_size": 8,
        "max_steps": 30,
        "log_every": 1,
        "eval_every": 10,
        "eval_batches": 2,
        "checkpoint_every": 10,
        "cpu_threads": 1,  # the same thread count in and out of process: bitwise-equal results
        "optimizer": {"lr": 3.0e-3},
        "schedule": {"warmup_steps": 5},
    },
}


def tiny_spec(**training: Any) -> dict[str, Any]:
    spec = copy.deepcopy(TINY)
    spec["training"].update(training)
    return spec


def write_spec(folder: Path, spec: dict[str, Any], name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def shakespeare_text(n_chars: int = 40_000) -> str:
    """The first ``n_chars`` characters of tinyshakespeare (or a stand-in if the file is absent)."""
    if SHAKESPEARE.exists():
        return SHAKESPEARE.read_text(encoding="utf-8")[:n_chars]
    line = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    return (line * (n_chars // len(line) + 1))[:n_chars]


def invoke(*args: object) -> Result:
    """`nima ARGS` in process; an unhandled exception fails the test instead of becoming exit code 1."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_cli(*args: object, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m nima ARGS` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "nima", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def read_metrics(run_dir: Path, split: str = "train") -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if r["split"] == split]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under ``folder`` with its mtime and contents."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
        for p in sorted(folder.rglob("*"))
    }


CPU = World(rank=0, size=1, device=torch.device("cpu"))


def make_corpus(n_chars: int = 20_000) -> Corpus:
    text = shakespeare_text(n_chars)
    encoded = encode_splits(train_tokenizer("char", text, 96), split_text(text, 0.1))
    tokens = {name: ids.astype(np.uint16) for name, ids in encoded.ids.items()}
    return Corpus(tokens, encoded.n_bytes, meta={})


def make_run(corpus: Corpus, dropout: float = 0.0, **training: object) -> Run:
    return build_run(spec_from_dict({**tiny_spec(**training), "dropout": dropout}), corpus, CPU)
