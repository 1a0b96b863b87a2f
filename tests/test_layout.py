"""`nima.layout.staged_folder`: what a killed process leaves is cleaned by the next writer (only if its
process is gone), and a target that appears while a folder is staged is not replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nima.layout import TargetAppeared, host, remove_stale, staged_folder

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """A process id that no process has now."""
    pid = 2**22 - 7
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_stale_staging_folders_are_removed_and_live_or_foreign_ones_kept(tmp_path: Path) -> None:
    stale = tmp_path / f".bundle.{dead_pid()}-{host()}.abc123.partial"
    live = tmp_path / f".bundle.{os.getpid()}-{host()}.def456.partial"  # this process: in use
    elsewhere = tmp_path / f".bundle.{dead_pid()}-0000beef.gh789.partial"  # another host's: maybe in use
    foreign = tmp_path / ".bundle.notes"
    other = tmp_path / f".bundlex.{dead_pid()}-{host()}.abc.partial"  # another target's
    for folder in (stale, live, elsewhere, foreign, other):
        folder.mkdir()
    assert remove_stale(tmp_path, "bundle") == [stale]
    assert not stale.exists() and all(f.exists() for f in (live, elsewhere, foreign, other))


def test_a_kill_between_the_two_renames_gives_the_old_folder_back(tmp_path: Path) -> None:
    """The old target was moved aside (``.old/previous``) and the new one not yet in place: the next
    writer puts the old one back rather than deleting the only copy."""
    aside = tmp_path / f".bundle.{dead_pid()}-{host()}.q1.old"
    (aside / "previous").mkdir(parents=True)
    (aside / "previous" / "model.onnx").write_text("the earlier bundle")
    remove_stale(tmp_path, "bundle")
    assert (tmp_path / "bundle" / "model.onnx").read_text() == "the earlier bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_in_a_folder_that_is_all_ours_any_stale_staging_folder_goes(tmp_path: Path) -> None:
    """``checkpoints/``: a killed run may have been writing any step; each dead one's staging folder goes."""
    dead = dead_pid()
    stale = [tmp_path / f".step-000030.{dead}-{host()}.x1.partial", tmp_path / f".step-000010.{dead}-{host()}.y2.old"]
    live = tmp_path / f".step-000020.{os.getpid()}-{host()}.z3.partial"
    kept = [tmp_path / "step-000010", tmp_path / ".step-000010.deleting"]
    for folder in (*stale, live, *kept):
        folder.mkdir()
    assert sorted(remove_stale(tmp_path)) == sorted(stale)
    assert live.exists() and all(folder.exists() for folder in kept)


def test_a_target_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(TargetAppeared), staged_folder(out) as tmp:
        (tmp / "mine.txt").write_text("staged")
        out.mkdir()
        (out / "theirs.txt").write_text("first")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging folder left


def test_an_export_killed_midway_leaves_nothing_the_next_one_keeps(tmp_path: Path) -> None:
    """SIGKILL while the graph is being written, then the same export again: it succeeds, and no
    staging folder of the killed one is left beside the bundle."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "killed",
                "vocab_size": 512,
                "max_seq_len": 64,
                "d_model": 64,
                "n_layers": 4,
                "attention": {"n_heads": 4},
                "ffn": {"kind": "swiglu", "hidden": 128},
                "position": {"kind": "rope"},
            }
        )
    )
    out = tmp_path / "bundle"
    command = [sys.executable, "-m", "nima", "export", "--onnx", str(spec), "-o", str(out)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".bundle.*.partial")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list(tmp_path.glob(".bundle.*"))
    assert left, "the export should have been killed while staging"
    assert not out.exists()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "spec.yaml"]
