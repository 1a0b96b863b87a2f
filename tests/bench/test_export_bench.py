"""bench/export.py runs end to end on the smallest preset and prints its table (a smoke test: the
figures themselves are the benchmark's business, not a test's)."""

from __future__ import annotations

from bench_support import run_bench


def test_export_benchmark_prints_a_row_per_target_and_dtype() -> None:
    args = ["--presets", "tiny", "--targets", "ort", "--dtypes", "fp32", "int4"]
    stdout = run_bench("export.py", *args)
    rows = {}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) == 8 and fields[0] == "tiny":
            rows[fields[2]] = [float(x) for x in fields[3:]]  # export s, MiB, nodes, ms/token, tokens/s
    assert set(rows) == {"fp32", "int4"}, stdout
    assert rows["int4"][1] < rows["fp32"][1]  # MiB: 4-bit MatMul weights make a smaller file
    for _seconds, _mib, nodes, latency, per_second in rows.values():
        # ms/token is printed with two decimals: tokens/s lies within what that rounding allows
        low, high = 1000 / (latency + 0.005), 1000 / max(latency - 0.005, 1e-9)
        assert nodes > 0 and latency > 0 and 0.99 * low - 0.1 <= per_second <= 1.01 * high + 0.1
