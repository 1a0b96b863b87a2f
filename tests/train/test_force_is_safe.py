"""`nima train --force` deletes only what a run provably wrote, and a spec's name cannot send a run
anywhere else: the two ways a user's files were lost, each with a sentinel file that must survive."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_support import invoke, tiny_spec, write_spec


def test_force_refuses_a_folder_that_holds_run_names_but_no_run(tmp_path: Path, corpus: Path) -> None:
    """``data/`` and ``checkpoints/`` of the user's, with no ``run.json``: refused, nothing deleted."""
    spec = write_spec(tmp_path, tiny_spec(max_steps=2))
    target = tmp_path / "mine"
    for folder in ("data", "checkpoints"):
        (target / folder).mkdir(parents=True)
        (target / folder / "keep.txt").write_text("mine")
    result = invoke("train", spec, "--data", corpus, "-o", target, "--force")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no run.json" in lines[0] and "will not delete" in lines[0], result.stderr
    assert (target / "data" / "keep.txt").read_text() == "mine"
    assert (target / "checkpoints" / "keep.txt").read_text() == "mine"


def test_force_refuses_a_hugging_face_folder(tmp_path: Path, corpus: Path) -> None:
    """A transformers folder shares model.safetensors and tokenizer.json with a run's names: without
    run.json and with files of its own (config.json), it is no run, and nothing there is deleted."""
    spec = write_spec(tmp_path, tiny_spec(max_steps=2))
    target = tmp_path / "hf"
    target.mkdir()
    for name, text in (("config.json", "{}"), ("model.safetensors", "weights"), ("tokenizer.json", "{}")):
        (target / name).write_text(text)
    result = invoke("train", spec, "--data", corpus, "-o", target, "--force")
    assert result.exit_code == 2 and "holds config.json and no run.json" in result.stderr, result.output
    assert (target / "model.safetensors").read_text() == "weights" and (target / "tokenizer.json").exists()


def test_force_replaces_a_built_model_folder(tmp_path: Path, corpus: Path) -> None:
    """A model folder (`nima build -o`: nima.json and model.safetensors, no run.json) may be trained over."""
    spec = write_spec(tmp_path, tiny_spec(max_steps=2))
    target = tmp_path / "model"
    assert invoke("build", spec, "-o", target).exit_code == 0
    result = invoke("train", spec, "--data", corpus, "-o", target, "--force")
    assert result.exit_code == 0, result.output
    assert (target / "run.json").is_file()


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "a\\\\b", "..", ".", "two\nlines"])
def test_a_name_that_is_a_path_is_refused_before_anything_is_written(
    tmp_path: Path, corpus: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without -o a run goes to runs/<name>: a name that climbs out, or names a path, is a spec error."""
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "sentinel.txt").write_text("mine")
    spec = write_spec(tmp_path, {**tiny_spec(max_steps=2), "name": name})
    monkeypatch.chdir(work)
    result = invoke("train", spec, "--data", corpus)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ": name: " in lines[0], result.stderr
    assert list(work.iterdir()) == [] and (tmp_path / "sentinel.txt").read_text() == "mine"


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_non_regular_data_is_refused(tmp_path: Path) -> None:
    """/dev/zero as training data would be read until memory runs out."""
    spec = write_spec(tmp_path, tiny_spec(max_steps=2))
    result = invoke("train", spec, "--data", "/dev/zero", "-o", tmp_path / "run")
    assert result.exit_code == 2 and "not a regular file" in result.stderr, result.output
    assert not (tmp_path / "run").exists()
