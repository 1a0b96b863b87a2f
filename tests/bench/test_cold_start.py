"""bench/cold_start.py on a small bundle: a row per mode and round, each timing something (a smoke
test: the figures are the benchmark's business)."""

from __future__ import annotations

from pathlib import Path

from bench_support import run_bench, small_bundle


def test_cold_start_prints_a_row_per_mode(tmp_path: Path) -> None:
    bundle, _ = small_bundle(tmp_path, "ort")
    stdout = run_bench("cold_start.py", "--bundle", str(bundle), "--rounds", "1")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in stdout.splitlines()]
    rows = [cells for cells in rows if len(cells) == 9 and cells[0] == "1"]
    assert sorted(cells[1] for cells in rows) == ["4 KB pages", "collapse on a thread", "collapse, then return"]
    for cells in rows:
        assert cells[-2] == "-", "the small bundle's context ends before 256 new tokens"
        load, first, *marks, steady = (float(c) for c in cells[2:-2] + cells[-1:])
        assert load >= 0 and first >= 0 and steady > 0  # rounded to 10 ms and 1 ms: a small bundle may show 0
        assert marks == sorted(marks) and marks[0] >= load, "tokens come after loading, in order"
