"""`nima train` with an encoder-decoder spec on pair data: the run learns, records its special ids,
evaluates exact match, resumes exactly, and refuses bad input with one `error:` line and exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tokenizers import Tokenizer
from train_support import SHAKESPEARE, invoke, read_metrics, tiny_spec, write_spec

SEQ2SEQ = {
    "name": "tiny-seq2seq",
    "architecture": "encoder-decoder",
    "vocab_size": 80,
    "max_seq_len": 48,
    "d_model": 32,
    "n_layers": 2,
    "attention": {"n_heads": 4},
    "ffn": {"kind": "relu", "hidden": 64},
    "position": {"kind": "sinusoidal"},
    "norm": {"kind": "layernorm", "placement": "post"},
    "training": {
        "tokenizer": "char",
        "batch_size": 16,
        "max_steps": 40,
        "log_every": 5,
        "eval_every": 20,
        "eval_batches": 2,
        "checkpoint_every": 10,
        "cpu_threads": 1,
        "optimizer": {"lr": 3.0e-3},
        "schedule": {"warmup_steps": 5},
    },
}


def reversed_pairs(n: int = 600) -> list[tuple[str, str]]:
    """Short Shakespeare lines and their words in reverse order."""
    text = SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.exists() else "to be or not to be\n" * n
    lines = [line.strip() for line in text.splitlines() if 3 <= len(line.split()) <= 5]
    return [(line, " ".join(reversed(line.split()))) for line in lines[:n]]


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "reverse.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in reversed_pairs()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, pair_file: Path) -> tuple[Path, Path]:
    """(spec, run folder) of a finished 40-step run."""
    folder = tmp_path_factory.mktemp("seq2seq")
    spec = write_spec(folder, SEQ2SEQ)
    result = invoke("train", spec, "--data", pair_file, "-o", folder / "run")
    assert result.exit_code == 0, result.output
    assert "exact match" in result.output
    return spec, folder / "run"


def test_the_run_learns_and_records_its_special_ids(finished: tuple[Path, Path]) -> None:
    _, run = finished
    losses = read_metrics(run)
    assert losses[-1][1] < losses[0][1] - 0.5, losses
    record = json.loads((run / "run.json").read_text())
    assert record["pairs"] == {"train": 540, "val": 60}
    tok = Tokenizer.from_file(str(run / "tokenizer.json"))
    ids = record["seq2seq"]
    assert ids == {
        "pad_token_id": tok.token_to_id("<pad>"),
        "decoder_start_token_id": tok.token_to_id("<s>"),
        "eos_token_id": tok.token_to_id("</s>"),
    }
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["split"] == "val"]
    assert [r["step"] for r in val] == [20, 40] and all(0.0 <= r["exact_match"] <= 1.0 for r in val)
    assert {"model.safetensors", "nima.json", "loss.png"} <= {p.name for p in run.iterdir()}


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(finished: tuple[Path, Path], tmp_path: Path) -> None:
    spec, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for step in ("step-000030", "step-000040"):
        shutil.rmtree(copy / "checkpoints" / step)  # as if stopped after step 20
    result = invoke("train", spec, "-o", copy, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming at step 20" in result.output
    a, b = load_file(str(copy / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert read_metrics(copy) == read_metrics(run)


def _bad(result, *needles: str) -> None:  # noqa: ANN001 - a click Result
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, pair_file: Path) -> None:
    spec = write_spec(tmp_path, SEQ2SEQ)
    out = tmp_path / "run"
    _bad(invoke("train", spec, "--data", tmp_path / "nope.tsv", "-o", out), "nope.tsv", "not found")
    malformed = tmp_path / "bad.tsv"
    malformed.write_text("a b c\tc b a\nno tab here\n", encoding="utf-8")
    _bad(invoke("train", spec, "--data", malformed, "-o", out), "bad.tsv:2:", "source<TAB>target")
    text = tmp_path / "plain.txt"
    text.write_text("just text\n", encoding="utf-8")
    _bad(invoke("train", spec, "--data", text, "-o", out), "plain.txt", ".tsv or .jsonl")
    _bad(invoke("train", spec, "-o", out), "--data", ".tsv or .jsonl")
    decoder = write_spec(tmp_path, tiny_spec(), "decoder.yaml")
    _bad(invoke("train", decoder, "--data", pair_file, "-o", out), "reverse.tsv", "architecture: decoder")
    assert not out.exists()
