"""`nima train` on bad input: one `error:` line naming the file or field, exit code 2, nothing overwritten."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tokenizers import Tokenizer
from train_support import TINY, invoke, run_cli, snapshot, tiny_spec, write_spec


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(spec, data, run folder) of a finished 10-step run; tests copy the folder before changing it."""
    from train_support import shakespeare_text

    folder = tmp_path_factory.mktemp("finished")
    data = folder / "data.txt"
    data.write_text(shakespeare_text(), encoding="utf-8")
    spec = write_spec(folder, tiny_spec(max_steps=10, checkpoint_every=5))
    result = invoke("train", spec, "--data", data, "-o", folder / "run")
    assert result.exit_code == 0, result.output
    return spec, data, folder / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def _bad(result, *needles: str) -> None:  # noqa: ANN001 - a click Result
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_the_run_folder_is_a_model_folder(finished: tuple[Path, Path, Path]) -> None:
    _, _, run = finished
    names = {p.name for p in run.iterdir()}
    assert {"nima.json", "model.safetensors", "tokenizer.json", "run.json", "metrics.jsonl", "loss.png"} <= names
    assert (run / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000005", "step-000010"]
    last = load_file(str(run / "checkpoints" / "step-000010" / "model.safetensors"))
    root = load_file(str(run / "model.safetensors"))
    assert all((last[k] == root[k]).all() for k in last)  # the root weights are the latest checkpoint's
    tok = Tokenizer.from_file(str(run / "tokenizer.json"))
    assert tok.decode(tok.encode("First Citizen:\n").ids) == "First Citizen:\n"


def test_missing_data(tmp_path: Path, spec_file: Path) -> None:
    _bad(invoke("train", spec_file, "--data", tmp_path / "nope.txt", "-o", tmp_path / "run"), "nope.txt", "not found")
    assert not (tmp_path / "run").exists()


def test_no_data_flag(tmp_path: Path, spec_file: Path) -> None:
    _bad(invoke("train", spec_file, "-o", tmp_path / "run"), "--data")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_data(tmp_path: Path, spec_file: Path, content: str) -> None:
    data = tmp_path / "empty.txt"
    data.write_text(content, encoding="utf-8")
    _bad(invoke("train", spec_file, "--data", data, "-o", tmp_path / "run"), "empty.txt", "empty")
    assert not (tmp_path / "run").exists()


def test_data_smaller_than_one_batch(tmp_path: Path, spec_file: Path) -> None:
    data = tmp_path / "short.txt"
    data.write_text("To be, or not to be, that is the question.\n" * 2, encoding="utf-8")
    _bad(invoke("train", spec_file, "--data", data, "-o", tmp_path / "run"), "short.txt", "training.batch_size")
    assert not (tmp_path / "run").exists()


def test_vocabulary_larger_than_vocab_size(tmp_path: Path, corpus: Path) -> None:
    spec = write_spec(tmp_path, {**TINY, "vocab_size": 40})
    _bad(invoke("train", spec, "--data", corpus, "-o", tmp_path / "run"), "vocab_size: 40")
    assert not (tmp_path / "run").exists()


def test_unwritable_run_folder(tmp_path: Path, spec_file: Path, corpus: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep", encoding="utf-8")
    _bad(invoke("train", spec_file, "--data", corpus, "-o", blocker / "run"), str(blocker / "run"))
    _bad(invoke("train", spec_file, "--data", corpus, "-o", blocker), str(blocker), "not a folder")
    assert blocker.read_text(encoding="utf-8") == "keep"


def test_read_only_run_folder(tmp_path: Path, spec_file: Path, corpus: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions (root)")
        _bad(invoke("train", spec_file, "--data", corpus, "-o", locked / "run"), "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_an_existing_run_is_not_overwritten(tmp_path: Path, finished: tuple[Path, Path, Path]) -> None:
    spec, data, run = finished
    run = _copy(run, tmp_path)
    before = snapshot(run)
    _bad(invoke("train", spec, "--data", data, "-o", run), str(run), "--resume", "--force")
    assert snapshot(run) == before


def test_a_built_model_is_not_overwritten(tmp_path: Path, spec_file: Path, corpus: Path) -> None:
    assert invoke("build", spec_file, "-o", tmp_path / "built").exit_code == 0
    before = snapshot(tmp_path / "built")
    _bad(invoke("train", spec_file, "--data", corpus, "-o", tmp_path / "built"), "nima.json")
    assert snapshot(tmp_path / "built") == before


def test_force_replaces_only_the_runs_files(tmp_path: Path, finished: tuple[Path, Path, Path]) -> None:
    spec, data, run = finished
    run = _copy(run, tmp_path)
    (run / "notes.md").write_text("mine", encoding="utf-8")
    (run / "checkpoints" / "step-000999").mkdir()  # a stale checkpoint that must not survive
    result = invoke("train", spec, "--data", data, "-o", run, "--force", "--set", "training.max_steps=5")
    assert result.exit_code == 0, result.output
    assert (run / "notes.md").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000005"]


def test_resume_with_another_spec(tmp_path: Path, finished: tuple[Path, Path, Path]) -> None:
    spec, _, run = finished
    run = _copy(run, tmp_path)
    before = snapshot(run)
    result = invoke("train", spec, "-o", run, "--resume", "--set", "d_model=64", "--set", "training.max_steps=20")
    _bad(result, "nima.json", "d_model: 32 in the run, 64 now", "--force")
    result = invoke("train", spec, "-o", run, "--resume", "--set", "training.optimizer.lr=0.1")
    _bad(result, "training.optimizer.lr")
    assert snapshot(run) == before


def test_resume_with_other_data(tmp_path: Path, finished: tuple[Path, Path, Path]) -> None:
    spec, _, run = finished
    run = _copy(run, tmp_path)
    other = tmp_path / "other.txt"
    other.write_text("something else entirely\n" * 100, encoding="utf-8")
    before = snapshot(run)
    result = invoke("train", spec, "--data", other, "-o", run, "--resume", "--set", "training.max_steps=20")
    _bad(result, "other.txt", "run.json")
    assert snapshot(run) == before


@pytest.mark.parametrize("target", ["optimizer.safetensors", "trainer.json"])
def test_resume_from_a_corrupt_checkpoint(tmp_path: Path, finished: tuple[Path, Path, Path], target: str) -> None:
    spec, _, run = finished
    run = _copy(run, tmp_path)
    damaged = run / "checkpoints" / "step-000010" / target
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    before = snapshot(run)
    result = invoke("train", spec, "-o", run, "--resume", "--set", "training.max_steps=20")
    _bad(result, "step-000010")
    assert snapshot(run) == before


def test_resume_with_a_damaged_tokenizer(tmp_path: Path, finished: tuple[Path, Path, Path]) -> None:
    """Training would not read it, but the run's export and generation would: refused before training."""
    spec, _, run = finished
    run = _copy(run, tmp_path)
    (run / "tokenizer.json").write_bytes((run / "tokenizer.json").read_bytes()[:30])
    before = snapshot(run)
    result = invoke("train", spec, "-o", run, "--resume", "--set", "training.max_steps=20")
    _bad(result, "tokenizer.json")
    assert snapshot(run) == before


@contextlib.contextmanager
def _unwritable(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable for this process: `chattr +i` where it works (it binds root too),
    else permission bits; skip where neither does."""
    locked = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    if not locked:
        path.chmod(0o500 if path.is_dir() else 0o400)
    try:
        if path.is_dir() and os.access(path, os.W_OK) and not locked:
            pytest.skip("running with privileges that ignore folder permissions, and chattr is unavailable")
        yield
    finally:
        if locked:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o700 if path.is_dir() else 0o600)


@pytest.mark.parametrize("target", ["checkpoints", "metrics.jsonl"])
def test_resume_into_an_unwritable_part_of_the_run(
    tmp_path: Path, finished: tuple[Path, Path, Path], target: str
) -> None:
    """Found before training: after it, the run would be half updated (metrics and weights without the
    checkpoint to resume them from)."""
    spec, _, run = finished
    run = _copy(run, tmp_path)
    before = snapshot(run)
    with _unwritable(run / target):
        result = invoke("train", spec, "-o", run, "--resume", "--set", "training.max_steps=20")
    _bad(result, str(run / target), "not writable")
    assert snapshot(run) == before


def test_resume_without_a_run(tmp_path: Path, spec_file: Path) -> None:
    (tmp_path / "empty").mkdir()
    _bad(invoke("train", spec_file, "-o", tmp_path / "empty", "--resume"), "run.json")
    _bad(invoke("train", spec_file, "-o", tmp_path / "absent", "--resume"), "absent")
    assert not (tmp_path / "absent").exists()


def test_resume_and_force_together(tmp_path: Path, spec_file: Path) -> None:
    _bad(invoke("train", spec_file, "-o", tmp_path / "run", "--resume", "--force"), "--resume", "--force")


@pytest.mark.parametrize(
    ("override", "needle"),
    [("training.precision=bf16", "training.precision"), ("architecture=encoder-decoder", "trains on pairs")],
)
def test_unsupported_settings(tmp_path: Path, spec_file: Path, corpus: Path, override: str, needle: str) -> None:
    _bad(invoke("train", spec_file, "--data", corpus, "-o", tmp_path / "run", "--set", override), needle)
    assert not (tmp_path / "run").exists()


def test_bad_spec_field(tmp_path: Path, spec_file: Path, corpus: Path) -> None:
    result = invoke("train", spec_file, "--data", corpus, "--set", "training.batch_size=0")
    assert result.exit_code == 2 and "training.batch_size" in result.stderr


def test_subprocess_exit_code_and_no_traceback(tmp_path: Path, spec_file: Path) -> None:
    proc = run_cli("train", spec_file, "--data", tmp_path / "missing", "-o", tmp_path / "run")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_force_does_not_mix_a_run_or_build_into_a_bundle_folder(tmp_path: Path, spec_file: Path, corpus: Path) -> None:
    """`--force` removes a run's files only; an export bundle's graphs would stay beside the new run."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("nima.json", "model.onnx", "genai_config.json"):
        (bundle / name).write_text("{}", encoding="utf-8")
    before = snapshot(bundle)
    _bad(invoke("train", spec_file, "--data", corpus, "-o", bundle, "--force"), "exported bundle", "model.onnx")
    _bad(invoke("build", spec_file, "-o", bundle, "--force"), "exported bundle", "model.onnx")
    assert snapshot(bundle) == before


def test_build_force_does_not_overwrite_a_run(tmp_path: Path, finished: tuple[Path, Path, Path]) -> None:
    """A build over a run would leave checkpoints that no longer match its weights."""
    spec, _, run = finished
    run = _copy(run, tmp_path)
    before = snapshot(run)
    for flags in ([], ["--force"]):
        _bad(invoke("build", spec, "-o", run, *flags), "a training run", "another folder")
    assert snapshot(run) == before


def test_fsdp_in_one_process_says_so(tmp_path: Path, spec_file: Path, corpus: Path) -> None:
    """FSDP is asked for by name; started without torchrun, the run trains in one process and says so."""
    result = invoke(
        "train", spec_file, "--data", corpus, "-o", tmp_path / "run", "--set", "training.distributed=fsdp",
        "--set", "training.max_steps=2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps lines at the console's width
    assert "note: training.distributed is fsdp, which applies under torchrun; this is one process" in said
    plain = invoke("train", spec_file, "--data", corpus, "-o", tmp_path / "plain", "--set", "training.max_steps=2")
    assert plain.exit_code == 0 and "note:" not in plain.output
