"""bench/step_overhead.py runs on a small `ort` bundle and prints both loops' rows (a smoke test: the
figures themselves are the benchmark's business, not a test's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_support import run_bench, small_bundle


@pytest.mark.parametrize("target", ["ort", "portable"])
def test_step_overhead_prints_a_row_per_loop(tmp_path: Path, target: str) -> None:
    bundle, _ = small_bundle(tmp_path, target)
    stdout = run_bench("step_overhead.py", "--bundle", str(bundle), "--rounds", "2")
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] in ("nima", "bare loop"):
            rows[cells[0]] = cells[1:]
    assert set(rows) == {"nima", "bare loop"}, stdout
    assert "sampling adds" in stdout, "the batch table's last line"
    timed = ["nima", "bare loop"] if target == "ort" else ["nima"]  # the bare loop needs shared buffers
    for name, cells in rows.items():
        if name not in timed:
            assert cells == ["n/a"] * 3
            continue
        step, inside, outside = (float(c) for c in cells)
        assert 0 < inside <= step and outside > 0
