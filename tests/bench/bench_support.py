"""Shared by the bench/ tests: where the scripts are, importing one by path, and a small bundle."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from nima.builders import build_model, save_build
from nima.export.bundle import export_bundle
from nima.spec import ModelSpec, spec_from_dict

BENCH = Path(__file__).resolve().parents[2] / "bench"
SMALL_SPEC = {
    "name": "bench-small",
    "vocab_size": 64,
    "max_seq_len": 256,  # the scripts' 32-token prompt and 128 new tokens
    "d_model": 64,
    "n_layers": 2,
    "attention": {"n_heads": 4, "n_kv_heads": 2},
    "ffn": {"kind": "swiglu", "hidden": 128},
    "position": {"kind": "rope"},
    "norm": {"kind": "rmsnorm"},
}


def load_bench(name: str) -> ModuleType:
    """Import bench/NAME.py by path: bench/ is a folder of scripts, not an installed package.

    A script imports its shared modules (bench/_harness.py, ...) as top-level names, found because
    Python puts a script's folder first on ``sys.path`` when it runs it. Here bench/ goes last
    instead, so those ``_``-prefixed names resolve while every other name finds what it found before
    (bench/export.py and bench/train.py shadow nothing).
    """
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"nima_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def small_bundle(folder: Path, target: str) -> tuple[Path, ModelSpec]:
    """`SMALL_SPEC` with seeded random weights, exported unverified to ``folder``/bundle."""
    spec = spec_from_dict(SMALL_SPEC)
    source = save_build(build_model(spec, seed=0), spec, folder / "src")
    return export_bundle(source, folder / "bundle", target=target, verify=False).out, spec


def run_bench(script: str, *args: str, timeout: int = 600, cwd: Path | None = None) -> str:
    """Run bench/``script`` with ``args`` in a fresh interpreter (as a user runs it); its stdout, once it
    exited 0 (else the test fails with the end of its stderr)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
