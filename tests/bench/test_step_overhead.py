"""bench/step_overhead.py runs on a small `ort` bundle and prints both loops' rows (a smoke test: the
figures themselves are the benchmark's business, not a test's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nima.builders import build_model, save_build
from nima.export.command import export_bundle
from nima.spec import spec_from_dict

BENCH = Path(__file__).resolve().parents[2] / "bench"
SPEC = {
    "name": "bench-overhead",
    "vocab_size": 64,
    "max_seq_len": 256,  # the script's 32-token prompt and 128 new tokens
    "d_model": 64,
    "n_layers": 2,
    "attention": {"n_heads": 4, "n_kv_heads": 2},
    "ffn": {"kind": "swiglu", "hidden": 128},
    "position": {"kind": "rope"},
    "norm": {"kind": "rmsnorm"},
}


@pytest.mark.parametrize("target", ["ort", "portable"])
def test_step_overhead_prints_a_row_per_loop(tmp_path: Path, target: str) -> None:
    spec = spec_from_dict(SPEC)
    source = save_build(build_model(spec, seed=0), spec, tmp_path / "src")
    bundle = export_bundle(source, tmp_path / "bundle", target=target, verify=False).out
    done = subprocess.run(
        [sys.executable, str(BENCH / "step_overhead.py"), "--bundle", str(bundle), "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {}
    for line in done.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] in ("nima", "bare loop"):
            rows[cells[0]] = cells[1:]
    assert set(rows) == {"nima", "bare loop"}, done.stdout
    timed = ["nima", "bare loop"] if target == "ort" else ["nima"]  # the bare loop needs shared buffers
    for name, cells in rows.items():
        if name not in timed:
            assert cells == ["n/a"] * 3
            continue
        step, inside, outside = (float(c) for c in cells)
        assert 0 < inside <= step and outside > 0
