"""The export tests' small model spec and CLI runner."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from nima.cli import app

SPEC = {
    "name": "bundle-tiny",
    "vocab_size": 96,
    "max_seq_len": 64,
    "d_model": 32,
    "n_layers": 2,
    "attention": {"n_heads": 4, "n_kv_heads": 2},
    "ffn": {"kind": "swiglu", "hidden": 48},
    "position": {"kind": "rope"},
    "norm": {"kind": "rmsnorm"},
    "bias": False,
    "tie_embeddings": False,
    "init": {"kind": "normal", "std": 0.2},
}


def invoke(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def shakespeare() -> bytes:
    """``tinyshakespeare.txt`` from ``../shared/data`` beside the repository."""
    found = [p / "shared" / "data" / "tinyshakespeare.txt" for p in Path(__file__).resolve().parents]
    return next(path for path in found if path.is_file()).read_bytes()
