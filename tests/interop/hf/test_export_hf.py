"""`nima export --hf`: an imported model written back as a transformers folder loads with
``AutoModelForCausalLM.from_pretrained`` and computes the same logits; importing that folder gives
bitwise the same weights file; a spec transformers cannot express is refused field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from hf_support import CASES, SEQ2SEQ_CASES, VOCAB, random_model, save
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
from typer.testing import CliRunner

from nima.cli import app
from nima.interop.hf.exporter import export_hf
from nima.interop.hf.importer import import_hf

# Phi-3 with a sliding window computes what Mistral does, and Mistral comes first in the export's table.
EXPORTED_AS = {"phi3-sliding": "mistral"}


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip(case: str, tmp_path: Path) -> None:
    hf = random_model(case, 21)
    import_hf(save(hf, tmp_path / "hf"), tmp_path / "nima")
    result = export_hf(tmp_path / "nima", tmp_path / "back")
    model_type = EXPORTED_AS.get(case, hf.config.model_type)
    assert result.model_type == model_type
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == model_type
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert type(back) is type(hf) or case in EXPORTED_AS
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (back(ids).logits - hf(ids).logits).abs().max() <= 1e-4
    import_hf(tmp_path / "back", tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (
        tmp_path / "nima" / "model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize("case", list(SEQ2SEQ_CASES))
def test_encoder_decoder_round_trip(case: str, tmp_path: Path) -> None:
    """T5, BART and Marian back as themselves: ``AutoModelForSeq2SeqLM`` gives the original's logits on a padded
    source batch, and importing the exported folder gives bitwise the same weights."""
    hf = random_model(case, 22)
    import_hf(save(hf, tmp_path / "hf"), tmp_path / "nima")
    assert export_hf(tmp_path / "nima", tmp_path / "back").model_type == hf.config.model_type
    back = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "back").eval()
    assert type(back) is type(hf)
    ids = torch.randint(3, VOCAB - 1, (2, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0
    targets = torch.randint(3, VOCAB - 1, (2, 6), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=targets).logits
        assert (back(input_ids=ids, attention_mask=mask, decoder_input_ids=targets).logits - want).abs().max() <= 1e-4
    import_hf(tmp_path / "back", tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (
        tmp_path / "nima" / "model.safetensors"
    ).read_bytes()


def test_a_spec_transformers_cannot_express_is_refused_by_field(tmp_path: Path) -> None:
    spec = {
        "name": "alibi-post",
        "vocab_size": 64,
        "max_seq_len": 32,
        "d_model": 32,
        "n_layers": 1,
        "attention": {"n_heads": 4},
        "ffn": {"kind": "swiglu", "hidden": 48},
        "position": {"kind": "alibi"},
        "norm": {"kind": "rmsnorm", "placement": "post"},
        "bias": False,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    runner = CliRunner()
    assert runner.invoke(app, ["build", str(tmp_path / "spec.yaml"), "-o", str(tmp_path / "m")]).exit_code == 0
    result = runner.invoke(app, ["export", "--hf", str(tmp_path / "m"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("error: position.kind: 'alibi', llama has 'rope'") for line in lines), lines
    assert any(line.startswith("error: norm.placement: 'post', llama has 'pre'") for line in lines), lines
    assert all(line.startswith("error: ") for line in lines)
    # rope's own fields (theta, scaling) are not differences of their own: the kinds differ
    assert not any(line.startswith("error: position.") and "kind" not in line for line in lines), lines
    assert not (tmp_path / "out").exists()
    # where the norm's kind differs too, the placement both kinds have is still a difference of its own
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**spec, "norm": {"kind": "layernorm", "placement": "post"}}))
    assert runner.invoke(app, ["build", str(tmp_path / "spec.yaml"), "-o", str(tmp_path / "m2")]).exit_code == 0
    result = runner.invoke(app, ["export", "--hf", str(tmp_path / "m2"), "-o", str(tmp_path / "out")])
    said = result.stderr
    assert result.exit_code == 2 and "norm.kind: 'layernorm'" in said and "norm.placement: 'post'" in said, said


def test_onnx_options_are_refused_with_hf(tmp_path: Path) -> None:
    import_hf(save(random_model("llama", 2), tmp_path / "hf"), tmp_path / "m")
    runner = CliRunner()
    for args in (["--quantize", "int8"], ["--target", "ort"], ["--onnx"]):
        result = runner.invoke(app, ["export", "--hf", str(tmp_path / "m"), "-o", str(tmp_path / "out"), *args])
        assert result.exit_code == 2 and result.stderr.startswith("error: "), result.output
    assert not (tmp_path / "out").exists()
    assert runner.invoke(app, ["export", "--hf", str(tmp_path / "m"), "-o", str(tmp_path / "out")]).exit_code == 0
    again = runner.invoke(app, ["export", "--hf", str(tmp_path / "m"), "-o", str(tmp_path / "out")])
    assert again.exit_code == 2 and "--force" in again.stderr


@pytest.mark.parametrize("spoil", ["truncated weights", "a missing tensor", "an unreadable spec"])
def test_a_broken_model_folder_is_one_error_line(tmp_path: Path, spoil: str) -> None:
    import_hf(save(random_model("llama", 3), tmp_path / "hf"), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    if spoil == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif spoil == "a missing tensor":
        tensors = load_file(str(weights))
        tensors.pop("decoder.blocks.1.ffn.up.weight")
        save_file(tensors, str(weights), metadata={"format": "pt"})
    else:
        (tmp_path / "m" / "nima.json").write_text('{"name": "x"}')
    result = CliRunner().invoke(app, ["export", "--hf", str(tmp_path / "m"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), lines
    if spoil == "a missing tensor":
        assert "lacks decoder.blocks.1.ffn.up.weight" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_spec_saying_a_default_twice_exports(tmp_path: Path) -> None:
    """q/k/v biases equal to the other biases, and a head size equal to d_model / n_heads, said explicitly:
    the same model as transformers', so it exports."""
    spec = {
        "name": "explicit",
        "vocab_size": 64,
        "max_seq_len": 32,
        "d_model": 32,
        "n_layers": 1,
        "attention": {"n_heads": 4, "head_dim": 8, "qkv_bias": False},
        "ffn": {"kind": "swiglu", "hidden": 48},
        "position": {"kind": "rope"},
        "norm": {"kind": "rmsnorm"},
        "bias": False,
        "tie_embeddings": False,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    runner = CliRunner()
    assert runner.invoke(app, ["build", str(tmp_path / "spec.yaml"), "-o", str(tmp_path / "m")]).exit_code == 0
    result = runner.invoke(app, ["export", "--hf", str(tmp_path / "m"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0 and "as llama" in result.stdout, result.output
