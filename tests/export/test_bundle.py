"""`nima export --onnx`: bundle contents, model card, fp16, and what bad input and failures leave behind."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from bundle_helpers import SPEC, invoke
from click.testing import Result

import nima.export.bundle as bundle_module
import nima.export.dynamo as dynamo
import nima.export.parity as verify
from nima.builders import build_model, load_weights, save_build
from nima.export.bundle import export_bundle
from nima.export.decoder.parity import check_parity
from nima.export.families import FAMILIES
from nima.export.parity import session_for
from nima.layout import TargetAppeared
from nima.spec import load_spec

BUNDLE_FILES = {"model.onnx", "nima.json", "bundle.json", "genai_config.json", "README.md"}


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_bundle_contents(bundle: tuple[Path, Result], model_dir: Path) -> None:
    out, result = bundle
    assert result.exit_code == 0, result.output
    # tokenizer_config.json: the tokenizer is a BPE one, which onnxruntime-genai reads
    assert entries(out) == BUNDLE_FILES | {"tokenizer.json", "tokenizer_config.json"}
    assert entries(out.parent) == {"tiny"}, "no temporary folders left beside the bundle"
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    assert json.loads((out / "nima.json").read_text()) == json.loads((model_dir / "nima.json").read_text())
    assert (out / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    assert "parity: max |logit diff|" in result.output


def test_bundle_logits_match_the_source_weights(bundle: tuple[Path, Result], model_dir: Path) -> None:
    """The graph carries the source's trained weights, not fresh ones: compare one forward."""
    out, _ = bundle
    spec = load_spec(model_dir / "nima.json")
    model = load_weights(build_model(spec), model_dir / "model.safetensors").eval()
    ids = np.array([[5, 9, 17, 33]], dtype=np.int64)
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(4, dtype=np.int64)[None],
    }
    for i in range(spec.n_layers):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, 2, 0, 8), np.float32)
    got = session_for(out / "model.onnx").run(["logits"], feeds)[0]
    with torch.no_grad():
        want = model(torch.from_numpy(ids))[0].numpy()
    assert np.abs(got - want).max() < 1e-4


def test_the_parity_check_catches_a_graph_of_other_weights(bundle: tuple[Path, Result], model_dir: Path) -> None:
    """`check_parity` passes the exported graph against its source model and fails it against a model
    whose weights differ: in one layer only, or entirely."""
    out, _ = bundle
    spec = load_spec(model_dir / "nima.json")
    session = session_for(out / "model.onnx")
    source = load_weights(build_model(spec), model_dir / "model.safetensors").eval()
    assert check_parity(source, spec, session).passed
    nudged = load_weights(build_model(spec), model_dir / "model.safetensors").eval()
    with torch.no_grad():
        weight = nudged.decoder.blocks[1].ffn.down.weight  # the last layer's output projection
        weight.add_(1e-3 * torch.randn_like(weight))
    report = check_parity(nudged, spec, session)
    assert not report.passed and report.measured > verify.TOLERANCES["fp32"]
    assert not check_parity(build_model(spec, seed=99).eval(), spec, session).passed


def test_genai_config(bundle: tuple[Path, Result]) -> None:
    out, _ = bundle
    config = json.loads((out / "genai_config.json").read_text())
    model = config["model"]
    assert model["type"] == "decoder"
    decoder = model["decoder"]
    assert decoder["filename"] == "model.onnx"
    assert (decoder["num_hidden_layers"], decoder["num_attention_heads"], decoder["num_key_value_heads"]) == (2, 4, 2)
    assert (decoder["head_size"], decoder["hidden_size"]) == (8, 32)
    assert decoder["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert decoder["outputs"]["present_value_names"] == "present.%d.value"
    assert model["vocab_size"] == 96 and model["context_length"] == 64
    assert model["eos_token_id"] == 0  # "<|endoftext|>" is the tokenizer's first special token


def test_model_card(bundle: tuple[Path, Result]) -> None:
    out, _ = bundle
    card = (out / "README.md").read_text()
    assert card.startswith("# bundle-tiny")
    assert "| heads | 4 q / 2 kv (GQA), head dim 8 |" in card
    assert "| ffn | swiglu, hidden 48 |" in card
    params = sum(p.numel() for p in build_model(load_spec(out / "nima.json")).parameters())
    assert f"{params:,}" in card
    assert "| prefill | " in card and "| cached decode | " in card
    assert "`tokenizer.json`" in card
    assert "One optional input, `logits_to_keep` (int64 scalar,\ndefault 0)" in card


def test_fp16_export_within_tolerance(model_dir: Path, tmp_path: Path) -> None:
    result = invoke("export", "--onnx", model_dir, "-o", tmp_path / "fp16", "--dtype", "fp16")
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(tmp_path / "fp16" / "model.onnx"))
    logits = next(o for o in graph.graph.output if o.name == "logits")
    assert logits.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert "tolerance 1e-02" in result.output


def test_float_tolerance_in_units_of_large_logits(trained_dir: Path, tmp_path: Path) -> None:
    """A model whose logits run into the tens (a trained model's do) exports at fp16: its rounding error
    grows with the logits, past the absolute 1e-2, so the difference is measured in units of the largest
    logit; a graph of other weights still fails at that scale."""
    spec = load_spec(trained_dir / "nima.json")
    model = load_weights(build_model(spec), trained_dir / "model.safetensors").eval()
    with torch.no_grad():
        model.decoder.final_norm.weight.mul_(8.0)  # logits 8x larger, the same model otherwise
    source = save_build(model, spec, tmp_path / "loud")
    result = invoke("export", "--onnx", source, "-o", tmp_path / "fp16", "--dtype", "fp16")
    assert result.exit_code == 0, result.output
    assert "max |logit diff| / max |logit|" in result.output
    report = check_parity(model, spec, session_for(tmp_path / "fp16" / "model.onnx", threads=1), dtype="fp16")
    assert report.logit_scale > 20.0
    assert report.max_abs_diff > verify.TOLERANCES["fp16"], "the absolute rule would have refused this export"
    assert report.passed and report.measured == report.max_abs_diff / report.logit_scale
    nudged = load_weights(build_model(spec), source / "model.safetensors").eval()
    with torch.no_grad():
        weight = nudged.decoder.blocks[1].ffn.down.weight  # the last layer's output projection
        weight.add_(3e-2 * torch.randn_like(weight))
    wrong = check_parity(nudged, spec, session_for(tmp_path / "fp16" / "model.onnx", threads=1), dtype="fp16")
    assert not wrong.passed and wrong.measured > verify.TOLERANCES["fp16"], wrong.describe()


def test_float_tolerance_absolute_for_unit_logits() -> None:
    """Logits within 1 keep the absolute difference: the figure is not divided by a scale below 1."""
    fields = {"prefill_max_abs_diff": 0.0, "decode_max_abs_diff": 0.0, "next_token_agreement": 1.0, "batch": 1}
    fields |= {"prompt_lengths": (4,), "decode_steps": 8, **verify.held_to("fp32")}
    small = verify.ParityReport(max_abs_diff=5e-5, logit_scale=0.25, **fields)
    assert small.measured == 5e-5 and small.passed and "/ max |logit|" not in small.describe()
    large = verify.ParityReport(max_abs_diff=5e-4, logit_scale=40.0, **fields)
    assert large.measured == 5e-4 / 40.0 and large.passed and "/ max |logit| (40)" in large.describe()
    assert not verify.ParityReport(max_abs_diff=5e-3, logit_scale=40.0, **fields).passed


@pytest.mark.parametrize(("kind", "op"), [("int8", "MatMulInteger"), ("int4", "MatMulNBits")])
def test_quantized_export_within_tolerance(kind: str, op: str, trained_dir: Path, tmp_path: Path) -> None:
    result = invoke("export", "--onnx", trained_dir, "-o", tmp_path / kind, "--quantize", kind)
    assert result.exit_code == 0, result.output
    assert "greedy agreement" in result.output and "max |logit diff| / max |logit|" in result.output
    graph = onnx.load(str(tmp_path / kind / "model.onnx")).graph
    weights = {init.name for init in graph.initializer}
    assert op in {node.op_type for node in graph.node}
    onnx.checker.check_model(str(tmp_path / kind / "model.onnx"), full_check=True)
    float_weight_matmuls = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert float_weight_matmuls == []  # every MatMul with constant weights was quantized
    assert entries(tmp_path / kind) == BUNDLE_FILES  # the fp32 intermediate is gone
    assert f"{kind} weights" in (tmp_path / kind / "README.md").read_text()


def _weight_matmuls(graph: onnx.GraphProto) -> list[str]:
    """MatMuls whose second input is a weight: an initializer, or a Transpose of one (a tied head)."""
    weights = {init.name for init in graph.initializer}
    transposed = {n.output[0] for n in graph.node if n.op_type == "Transpose" and n.input[0] in weights}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights | transposed]


@pytest.mark.parametrize("target", ["portable", "ort"])
@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_tied_head_is_quantized(kind: str, target: str, trained_tied_dir: Path, tmp_path: Path) -> None:
    """A tied head multiplies by Transpose(table), which the quantizers pass over: it gets its own
    transposed copy, quantized with the other MatMuls, while the Gather keeps the fp32 table. int8 is
    standard ONNX's MatMulInteger on the portable target, ORT's 8-bit MatMulNBits on the ``ort`` one."""
    op = "MatMulInteger" if (kind, target) == ("int8", "portable") else "MatMulNBits"
    assert invoke("export", "--onnx", trained_tied_dir, "-o", tmp_path / "fp32", "--target", target).exit_code == 0
    fp32 = onnx.load(str(tmp_path / "fp32" / "model.onnx")).graph
    transposes = [n for n in fp32.node if n.op_type == "Transpose" and n.input[0] in {i.name for i in fp32.initializer}]
    assert len(transposes) == 1, "the exported head reads Transpose(table): the case under test"
    result = invoke("export", "--onnx", trained_tied_dir, "-o", tmp_path / kind, "--target", target, "--quantize", kind)
    assert result.exit_code == 0, result.output  # the export check held it to its tolerance
    graph = onnx.load(str(tmp_path / kind / "model.onnx")).graph
    assert _weight_matmuls(graph) == [], "no MatMul with fp32 weights left, the head's included"
    assert graph.input[-1].name == "logits_to_keep", "the optional input survives quantization"
    assert sum(n.op_type == op for n in graph.node) == len(_weight_matmuls(fp32))
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    gather = next(n for n in graph.node if n.op_type == "Gather" and shapes.get(n.input[0]) == (256, 64))
    assert next(i for i in graph.initializer if i.name == gather.input[0]).data_type == onnx.TensorProto.FLOAT
    producers = {out: n for n in graph.node for out in n.output}
    node = producers["logits"]
    for _ in range(6):  # back from the logits through the dequantizing Cast/Mul and any bias Add
        if node.op_type == op:
            break
        node = producers[next(i for i in node.input if i in producers)]
    assert node.op_type == op, "the logits come from a quantized MatMul"
    head_weight = next(i for i in graph.initializer if i.name == node.input[1])
    # MatMulInteger takes int8 weights; MatMulNBits packs 8- or 4-bit weights into uint8
    assert head_weight.data_type == (onnx.TensorProto.INT8 if op == "MatMulInteger" else onnx.TensorProto.UINT8)


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--target", "ort"],
        ["--quantize", "int8"],
        ["--quantize", "int4"],
        ["--target", "ort", "--quantize", "int8"],
    ],
)
def test_weights_past_protobufs_limit_go_to_external_data(
    options: list[str], trained_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graph whose weights pass `EXTERNAL_BYTES` (1 MB; or protobuf's 2 GB) keeps them in ``model.onnx.data``;
    quantizing such a graph leaves no fp32 weights behind. The limit is lowered so a small model stands in for
    a large one."""
    monkeypatch.setattr(dynamo, "EXTERNAL_BYTES", 1024)
    out = tmp_path / "bundle"
    result = invoke("export", "--onnx", trained_dir, "-o", out, *options)
    assert result.exit_code == 0, result.output  # the parity check ran ORT on the written files
    assert entries(out) == BUNDLE_FILES | {"model.onnx.data"}
    assert entries(tmp_path) == {"bundle"}  # no scratch folder left beside it
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    external = [init.name for init in graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL]
    assert external, "the weights should be in model.onnx.data"


def test_parity_failure_leaves_nothing(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(verify.TOLERANCES, "fp32", -1.0)  # any difference, even 0, fails
    result = invoke("export", "--onnx", model_dir, "-o", tmp_path / "b")
    assert result.exit_code == 1
    assert "differs from PyTorch" in result.output
    assert entries(tmp_path) == set()


@pytest.mark.parametrize("source", ["spec", "model"])
def test_a_failed_quantized_check_says_why_and_how_to_write_it_anyway(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    monkeypatch.setitem(verify.MIN_AGREEMENT, "int8", 1.01)  # no agreement can reach it
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    result = invoke(
        "export", "--onnx", spec if source == "spec" else model_dir, "-o", tmp_path / "b", "--quantize", "int8"
    )
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert "no bundle written (" in said
    assert "export a trained model, or pass --no-verify to write the int8 bundle unchecked)" in said
    assert ("random weights (a spec file)" in said) == (source == "spec")
    assert not (tmp_path / "b").exists()


def test_interrupted_export_leaves_nothing(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(FAMILIES, "decoder", replace(FAMILIES["decoder"], check=interrupted))
    with pytest.raises(KeyboardInterrupt):
        export_bundle(model_dir, tmp_path / "b")
    assert entries(tmp_path) == set()


def test_spec_file_source_warns_and_force_replaces(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**SPEC, "n_layers": 1}))
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    refused = invoke("export", "--onnx", spec_path, "-o", out)
    assert refused.exit_code == 2 and "--force" in refused.output
    assert entries(out) == {"old.txt"}
    (out / "old.txt").unlink()
    for name in ("nima.json", "model.onnx", "README.md"):  # an earlier bundle: --force replaces it
        (out / name).write_text("previous")
    result = invoke("export", "--onnx", spec_path, "-o", out, "--force", "--no-verify")
    assert result.exit_code == 0, result.output
    assert "randomly initialised" in result.output
    assert entries(out) == BUNDLE_FILES
    assert "Not verified" in (out / "README.md").read_text()


def test_force_replaces_only_an_earlier_bundle(model_dir: Path, tmp_path: Path) -> None:
    """--force swaps the whole folder out, so it refuses the source, a folder holding the source, and
    any folder that is not a bundle (a run, a project folder), deleting nothing."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    holder = tmp_path / "holder"
    source = holder / "src"
    source.mkdir(parents=True)
    for f in model_dir.iterdir():
        (source / f.name).write_bytes(f.read_bytes())
    before = {p: entries(p) for p in (project, holder, source)}
    for out, message in [(source, "source"), (holder, "source"), (project, "not an earlier bundle")]:
        result = invoke("export", "--onnx", source, "-o", out, "--force", "--no-verify")
        assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert {p: entries(p) for p in (project, holder, source)} == before


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "no-spec",
        "no-weights",
        "corrupt-weights",
        "mismatch",
        "dtype",
        "bf16",
        "quantize",
        "quantize-fp16",
        "target",
        "onnx-and-hf",
        "encoder-decoder-target",
        "unwritable-target",
        "corrupt-tokenizer",
        "tokenizer-folder",
        "spec-with-errors",
    ],
)
def test_bad_input_exits_2_and_writes_nothing(case: str, model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    args: list[object] = ["export", "--onnx", src, "-o", tmp_path / "out"]
    if case != "missing":
        src.mkdir()
        for name in ("nima.json", "model.safetensors"):
            (src / name).write_bytes((model_dir / name).read_bytes())
    if case == "no-spec":
        (src / "nima.json").unlink()
    elif case == "no-weights":
        (src / "model.safetensors").unlink()
    elif case == "corrupt-weights":
        (src / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    elif case == "mismatch":
        spec = json.loads((src / "nima.json").read_text())
        spec["ffn"]["hidden"] = 40
        (src / "nima.json").write_text(json.dumps(spec))
    elif case == "spec-with-errors":  # its errors alone, not the random-weights warning first
        spec_path = tmp_path / "bad.yaml"
        spec_path.write_text(yaml.safe_dump({**SPEC, "n_layers": 0}))
        args[2] = spec_path
    elif case == "corrupt-tokenizer":  # truncated: the bundle would ship it, and generation would fail on it
        (src / "tokenizer.json").write_bytes((model_dir / "tokenizer.json").read_bytes()[:30])
    elif case == "tokenizer-folder":
        (src / "tokenizer.json").mkdir()
    elif case == "dtype":
        args += ["--dtype", "int3"]
    elif case == "bf16":
        args += ["--dtype", "bf16"]
    elif case == "quantize":
        args += ["--quantize", "int3"]
    elif case == "quantize-fp16":
        args += ["--quantize", "int8", "--dtype", "fp16"]
    elif case == "target":
        args += ["--target", "tensorrt"]
    elif case == "onnx-and-hf":
        args.append("--hf")
    elif case == "unwritable-target":  # a path under a file: no folder can be made there, even as root
        (tmp_path / "blocker").write_text("kept")
        args[4] = tmp_path / "blocker" / "out"
    elif case == "encoder-decoder-target":
        spec_path = tmp_path / "s2s.yaml"
        spec_path.write_text(yaml.safe_dump({**SPEC, "architecture": "encoder-decoder"}))
        args[2] = spec_path
        args += ["--target", "ort"]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") or "\nerror: " in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())
    if case == "bf16":
        assert "bf16 MatMul" in result.output  # the reason, not only the list of dtypes
    if case in ("corrupt-tokenizer", "tokenizer-folder"):
        assert "tokenizer.json" in result.output
    if case == "spec-with-errors":
        assert result.output.startswith("error: ") and "n_layers" in result.output
        assert "randomly initialised" not in result.output
    if case == "unwritable-target":
        assert (tmp_path / "blocker").read_text() == "kept"


def test_a_folder_that_appears_after_the_check_is_not_replaced(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone creates the target after the export checked it and before it is written: without
    --force the export refuses at the end, and their folder stays as it is."""
    out = tmp_path / "b"
    real = bundle_module.load_source

    def meanwhile(*args: object, **kwargs: object):  # noqa: ANN202 - the real source
        out.mkdir()
        (out / "precious.txt").write_text("theirs")
        return real(*args, **kwargs)

    monkeypatch.setattr(bundle_module, "load_source", meanwhile)
    with pytest.raises(TargetAppeared):
        export_bundle(model_dir, out)
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_onnx_is_the_default_and_a_log_gets_a_line_per_stage(model_dir: Path, tmp_path: Path) -> None:
    """Without --onnx (or --hf) the export writes an ONNX bundle; with no terminal (a CI log, a pipe)
    each stage is a line, since the spinner a terminal shows prints nothing there."""
    result = invoke("export", model_dir, "-o", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "model.onnx").is_file()
    stages = [line for line in result.stderr.splitlines() if line.endswith(" ...")]
    assert stages[0] == "loading source ..." and "checking ONNX Runtime against PyTorch ..." in stages
    both = invoke("export", model_dir, "-o", tmp_path / "c", "--onnx", "--hf")
    assert both.exit_code == 2 and "pass one of --onnx" in both.stderr
