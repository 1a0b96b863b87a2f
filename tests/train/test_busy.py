"""`nima.train.busy`: the thread-count hint on busy CPUs, from /proc/stat samples."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nima.train import busy


def test_the_hint_names_the_threads_the_idle_cpus_carry() -> None:
    assert busy.busy_hint(2, 2.0) is None  # idle: torch's default is the fast one
    assert busy.busy_hint(2, 1.6) is None
    assert busy.busy_hint(1, 0.2) is None  # one thread waits for no other
    assert busy.busy_hint(2, None) is None  # unknown (not Linux)
    hint = busy.busy_hint(2, 0.9)
    assert hint is not None and hint.endswith("--set training.cpu_threads=1 trains faster while other work runs")
    assert "--set training.cpu_threads=3 " in (busy.busy_hint(8, 3.2) or "")


def test_idle_cpus_is_the_idle_share_of_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = iter(["cpu  100 0 100 800 0 0 0 0 0 0\n", "cpu  250 0 150 1000 0 0 0 0 0 0\n"])  # 200 of 400 idle

    class Stat:
        def read_text(self) -> str:
            return next(samples)

    monkeypatch.setattr(busy, "STAT", Stat())
    assert busy.idle_cpus(4, window_s=0) == pytest.approx(2.0)


def test_a_spinning_process_is_seen() -> None:
    """A process spinning on one core leaves less than the whole machine idle (Linux only)."""
    if busy.idle_cpus(1, 0.05) is None:
        pytest.skip("no /proc/stat")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        idle = busy.idle_cpus(1, 0.5)  # the machine counted as one CPU: the idle share
    finally:
        spinner.kill()
    assert idle is not None and idle < 0.9
