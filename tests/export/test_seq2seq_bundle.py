"""`nima export --onnx` of an encoder-decoder: the bundle's files, its manifest (bundle.json),
the model card, the token ids, quantized weights, and that a failed check or an unsupported option
writes nothing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
import yaml
from bundle_helpers import invoke, shakespeare

from nima.export import dynamo
from nima.export.families import FAMILIES
from nima.export.seq2seq.manifest import token_ids
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
    assert names == {"encoder.onnx", "decoder.onnx", "nima.json", "bundle.json", "tokenizer.json", "README.md"}
    assert load_spec(bundle / "nima.json").architecture == "encoder-decoder"
    record = json.loads((bundle / "bundle.json").read_text())
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


def test_ids_come_from_the_spec_then_the_run_record(tmp_path: Path, model_dir: Path) -> None:
    spec = load_spec(model_dir / "nima.json")
    ids = {"pad_token_id": 5, "decoder_start_token_id": 6, "eos_token_id": 7}
    (tmp_path / "run.json").write_text(json.dumps({"seq2seq": ids}))
    assert token_ids(spec, tmp_path, model_dir / "tokenizer.json").as_dict() == {
        "decoder_start_token_id": 6,
        "eos_token_id": 7,
        "pad_token_id": 5,
    }
    assert token_ids(spec, None, model_dir / "tokenizer.json").as_dict()["eos_token_id"] == 10
    assert token_ids(spec, None, None).as_dict() == {"decoder_start_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    named = spec.model_copy(
        update={"generation": replace(spec.generation, decoder_start_token_id=3, pad_token_id=4, eos_token_ids=[2, 1])}
    )  # an imported model's ids, from its Hugging Face config
    assert token_ids(named, tmp_path, None).as_dict() == {
        "decoder_start_token_id": 3,
        "eos_token_id": 2,
        "pad_token_id": 4,
    }


def test_a_failed_parity_check_exits_1_and_writes_nothing(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = FAMILIES["encoder-decoder"].check

    def off_by_one(*args: object, **kwargs: object):  # noqa: ANN202 - returns the real report, altered
        return replace(real(*args, **kwargs), encoder_max_abs_diff=1.0)

    monkeypatch.setitem(FAMILIES, "encoder-decoder", replace(FAMILIES["encoder-decoder"], check=off_by_one))
    out = tmp_path / "bundle"
    result = invoke("export", "--onnx", model_dir, "-o", out)
    assert result.exit_code == 1, result.output
    assert "encoder max |hidden diff|" in result.stderr and "no bundle written" in result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_the_ort_target_exits_2(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = invoke("export", "--onnx", model_dir, "-o", out, "--target", "ort")
    assert result.exit_code == 2, result.output
    assert "--target ort is for decoder-only models" in result.stderr
    assert not out.exists()


TRAINED_SPEC = {
    "name": "trained-seq2seq",
    "architecture": "encoder-decoder",
    "vocab_size": 128,
    "max_seq_len": 64,
    "d_model": 64,
    "n_layers": 1,
    "n_encoder_layers": 1,
    "attention": {"n_heads": 4},
    "ffn": {"kind": "swiglu", "hidden": 128},
    "position": {"kind": "rope"},
    "norm": {"kind": "rmsnorm"},
    "init": {"kind": "normal"},
}


@pytest.fixture(scope="module")
def trained_seq2seq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An encoder-decoder trained briefly to continue 32 bytes of Shakespeare from the 32 before, so
    its logits are peaked like a real model's: quantization is judged on that (about 5 s)."""
    import torch

    from nima.builders import build_model, save_build
    from nima.spec import spec_from_dict

    data = torch.tensor([b % 128 for b in shakespeare()[:50_000]])
    spec = spec_from_dict(TRAINED_SPEC)
    model = build_model(spec, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(0, len(data) - 65, (16,), generator=gen)
        windows = torch.stack([data[s : s + 64] for s in starts])  # (16, 64)
        source, decoder_in, target = windows[:, :32], windows[:, 31:63], windows[:, 32:]
        logits, _, _ = model(source, decoder_in)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 128), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 2.8, "the model should have learned something"
    return save_build(model.eval(), spec, tmp_path_factory.mktemp("trained-seq2seq") / "model")


def _greedy(bundle: Path, source: list[int]) -> list[int]:
    from nima.runtime import Generator

    return Generator(bundle).generate(sources=[source], max_new_tokens=16)[0].token_ids


@pytest.mark.parametrize(("kind", "op"), [("int8", "MatMulInteger"), ("int4", "MatMulNBits")])
def test_quantized_export(kind: str, op: str, trained_seq2seq_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / kind
    result = invoke("export", "--onnx", trained_seq2seq_dir, "-o", out, "--quantize", kind)
    assert result.exit_code == 0, result.output
    assert "max |logit diff| / max |logit|" in result.output and "greedy agreement" in result.output
    for name in ("encoder.onnx", "decoder.onnx"):
        graph = onnx.load(str(out / name)).graph
        weights = {init.name for init in graph.initializer}
        assert op in {node.op_type for node in graph.node}, name
        float_weight_matmuls = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
        assert float_weight_matmuls == [], name  # every MatMul with constant weights was quantized
    assert {p.name for p in out.iterdir()} == {"encoder.onnx", "decoder.onnx", "nima.json", "bundle.json", "README.md"}
    card = (out / "README.md").read_text()
    assert f"(fp32, {kind} weights)" in card and "judged by the logits" in card
    # generation runs on the quantized graphs and, on this peaked model, picks the fp32 bundle's tokens
    fp32 = tmp_path / "fp32"
    assert invoke("export", "--onnx", trained_seq2seq_dir, "-o", fp32, "--no-verify").exit_code == 0
    source = [b % 128 for b in shakespeare()[1000:1032]]
    assert _greedy(out, source)[:8] == _greedy(fp32, source)[:8]


def test_quantized_external_data(trained_seq2seq_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both graphs past protobuf's limit (lowered here): their quantized weights in ``<graph>.data``
    files, no fp32 weights left behind, and the bundle generates."""
    monkeypatch.setattr(dynamo, "EXTERNAL_BYTES", 1024)
    out = tmp_path / "int8"
    result = invoke("export", "--onnx", trained_seq2seq_dir, "-o", out, "--quantize", "int8")
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {"encoder.onnx", "encoder.onnx.data", "decoder.onnx", "decoder.onnx.data"} | {
        "nima.json",
        "bundle.json",
        "README.md",
    }
    assert {p.name for p in tmp_path.iterdir()} == {"int8"}
    assert len(_greedy(out, [b % 128 for b in shakespeare()[1000:1032]])) == 16


def test_fp16_export(trained_seq2seq_dir: Path, tmp_path: Path) -> None:
    """Both graphs in fp16, held to 1e-2 and to 90% greedy agreement; the runtime generates from them."""
    out = tmp_path / "fp16"
    result = invoke("export", "--onnx", trained_seq2seq_dir, "-o", out, "--dtype", "fp16")
    assert result.exit_code == 0, result.output
    assert "tolerance 1e-02" in result.output and "(at least 90%)" in result.output
    for name, output in (("encoder.onnx", "encoder_hidden_states"), ("decoder.onnx", "logits")):
        graph = onnx.load(str(out / name), load_external_data=False).graph
        produced = next(o for o in graph.output if o.name == output)
        assert produced.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16, name
    assert "(fp16)" in (out / "README.md").read_text()
    assert len(_greedy(out, [b % 128 for b in shakespeare()[1000:1032]])) == 16
