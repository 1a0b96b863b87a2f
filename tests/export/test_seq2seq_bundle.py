"""`nima export --onnx` of an encoder-decoder: the bundle's files, its runtime record (seq2seq.json),
the model card, the token ids, and that a failed check or an unsupported option writes nothing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from bundle_helpers import invoke

from nima.export import seq2seq_bundle
from nima.export.seq2seq_bundle import special_ids
from nima.spec import load_spec
from nima.train.pairs import SPECIALS
from nima.train.tokenizer import train_tokenizer

SPEC = {
    "name": "seq2seq-tiny",
    "architecture": "encoder-decoder",
    "vocab_size": 48,
    "max_seq_len": 24,
    "d_model": 16,
    "n_layers": 1,
    "n_encoder_layers": 1,
    "attention": {"n_heads": 2},
    "ffn": {"kind": "relu", "hidden": 32},
    "position": {"kind": "sinusoidal"},
    "norm": {"kind": "layernorm", "placement": "post"},
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `nima build` folder of a small encoder-decoder with a char tokenizer holding <pad>, <s>, </s>."""
    root = tmp_path_factory.mktemp("seq2seq-src")
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    out = root / "model"
    assert invoke("build", spec_path, "-o", out, "--seed", 1).exit_code == 0
    train_tokenizer("char", "to be or not to be\nbe to not or be to\n", 48, SPECIALS).save(out / "tokenizer.json")
    return out


@pytest.fixture(scope="module")
def bundle(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seq2seq-bundles") / "tiny"
    result = invoke("export", "--onnx", model_dir, "-o", out)
    assert result.exit_code == 0, result.output
    assert "encoder max |hidden diff|" in result.output
    return out


def test_bundle_files_and_runtime_record(bundle: Path) -> None:
    names = {p.name for p in bundle.iterdir()}
    assert names == {"encoder.onnx", "decoder.onnx", "nima.json", "seq2seq.json", "tokenizer.json", "README.md"}
    assert load_spec(bundle / "nima.json").architecture == "encoder-decoder"
    record = json.loads((bundle / "seq2seq.json").read_text())
    # the char tokenizer has 8 characters ("\n", " ", b, e, n, o, r, t); the specials follow them
    assert (record["pad_token_id"], record["decoder_start_token_id"], record["eos_token_id"]) == (8, 9, 10)
    assert record["encoder"]["filename"] == "encoder.onnx" and record["decoder"]["filename"] == "decoder.onnx"
    assert record["decoder"]["inputs"]["cross_key_names"] == "cross_key_values.%d.key"
    assert record["encoder"]["outputs"]["cross_key_names"] == "cross_key_values.%d.key"
    assert record["decoder"]["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert (record["num_key_value_heads"], record["head_size"], record["decoder"]["num_hidden_layers"]) == (2, 8, 1)


def test_model_card(bundle: Path) -> None:
    card = (bundle / "README.md").read_text()
    assert card.startswith("# seq2seq-tiny")
    assert "| encoder hidden states |" in card and "| decoder logits, cached steps |" in card
    assert "`input_ids` = [[9]] per row" in card and "Stop at token 10" in card
    assert "No `genai_config.json`" in card


def test_ids_come_from_the_run_record_first(tmp_path: Path, model_dir: Path) -> None:
    ids = {"pad_token_id": 5, "decoder_start_token_id": 6, "eos_token_id": 7}
    (tmp_path / "run.json").write_text(json.dumps({"seq2seq": ids}))
    assert special_ids(tmp_path, model_dir / "tokenizer.json") == {
        "decoder_start_token_id": 6,
        "eos_token_id": 7,
        "pad_token_id": 5,
    }
    assert special_ids(None, model_dir / "tokenizer.json")["eos_token_id"] == 10
    assert special_ids(None, None) == {"decoder_start_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}


def test_a_failed_parity_check_exits_1_and_writes_nothing(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = seq2seq_bundle.check_seq2seq_parity

    def off_by_one(*args: object, **kwargs: object):  # noqa: ANN202 - returns the real report, altered
        return replace(real(*args, **kwargs), encoder_max_abs_diff=1.0)

    monkeypatch.setattr(seq2seq_bundle, "check_seq2seq_parity", off_by_one)
    out = tmp_path / "bundle"
    result = invoke("export", "--onnx", model_dir, "-o", out)
    assert result.exit_code == 1, result.output
    assert "encoder max |hidden diff| 1.00e+00" in result.stderr and "no bundle written" in result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


@pytest.mark.parametrize("option", [["--quantize", "int8"], ["--target", "ort"]])
def test_unsupported_options_exit_2(model_dir: Path, tmp_path: Path, option: list[str]) -> None:
    out = tmp_path / "bundle"
    result = invoke("export", "--onnx", model_dir, "-o", out, *option)
    assert result.exit_code == 2, result.output
    assert "encoder-decoder exports as portable fp32 or fp16 graphs only" in result.stderr
    assert not out.exists()
