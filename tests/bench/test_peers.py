"""bench/peers.py end to end at 9M, fp32, one round: the transformers folder, each installed engine's
conversion and a row per engine, Nima's first (a smoke test: the figures are the benchmark's business;
engines whose packages are missing are skipped by the script)."""

from __future__ import annotations

from pathlib import Path

from bench_support import run_bench


def test_peers_prints_a_row_per_engine(tmp_path: Path) -> None:
    stdout = run_bench("peers.py", "--sizes", "tiny", "--widths", "fp32", "--rounds", "1", timeout=900, cwd=tmp_path)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in stdout.splitlines()]
    rows = [cells for cells in rows if len(cells) == 10 and cells[0] == "tiny"]
    assert rows and rows[0][2] == "nima", stdout
    for cells in rows:
        assert float(cells[3]) > 0 and cells[-1] == "128/128", cells  # fp32: every engine's tokens are Nima's
