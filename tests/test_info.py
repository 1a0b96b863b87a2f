"""`nima info PATH` (`nima.info`): what a spec, model folder, run, bundle or transformers folder is,
read from the files themselves; torch-free; bad paths as one `error:` line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from transformers_support import tiny_llama
from typer.testing import CliRunner

from nima.cli import app
from nima.spec import figures, load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "name": "info-tiny",
    "vocab_size": 256,
    "max_seq_len": 32,
    "d_model": 32,
    "n_layers": 2,
    "attention": {"n_heads": 4},
    "ffn": {"kind": "swiglu", "hidden": 64},
    "position": {"kind": "rope"},
    "tie_embeddings": False,
    "training": {"batch_size": 4, "max_steps": 6, "eval_every": 3, "checkpoint_every": 3, "tokenizer": "byte"},
}


def invoke(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def info_json(path: Path) -> dict:
    code, out, err = invoke("info", path, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("info")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    data = root / "data.txt"
    data.write_text("To be, or not to be, that is the question.\n" * 200)
    assert invoke("build", spec, "-o", root / "model")[0] == 0
    assert invoke("train", spec, "--data", data, "-o", root / "run")[0] == 0
    assert invoke("export", "--onnx", root / "run", "-o", root / "bundle")[0] == 0
    assert invoke("export", "--onnx", root / "model", "-o", root / "unchecked", "--no-verify")[0] == 0
    return {"spec": spec, "model": root / "model", "run": root / "run", "bundle": root / "bundle", "root": root}


def test_a_spec(made: dict[str, Path]) -> None:
    found = info_json(made["spec"])
    assert found["kind"] == "spec"
    parameters = figures(load_spec(made["spec"])).parameters
    assert found["rows"]["parameters"].startswith(f"{parameters:,} ")


def test_a_model_folder_counts_its_weights_from_the_file(made: dict[str, Path]) -> None:
    found = info_json(made["model"])
    assert found["kind"] == "model"
    weights = load_file(str(made["model"] / "model.safetensors"))  # the independent count
    values = sum(t.numel() for t in weights.values())
    assert found["rows"]["weights"].startswith(f"{len(weights)} tensors, {values:,} values, F32")
    assert found["rows"]["tokenizer"] == "none (prompts are token ids)"
    assert set(found["files"]) == {"nima.json", "model.safetensors"}
    assert found["files"]["model.safetensors"] == (made["model"] / "model.safetensors").stat().st_size


def test_a_run_reports_its_progress(made: dict[str, Path]) -> None:
    found = info_json(made["run"])
    assert found["kind"] == "run"
    lines = [json.loads(line) for line in (made["run"] / "metrics.jsonl").read_text().splitlines()]
    last_val = [entry for entry in lines if entry["split"] == "val"][-1]
    assert found["rows"]["last val loss"] == f"{last_val['loss']:.4f} at step {last_val['step']}"
    assert found["rows"]["checkpoints"] == "step-000003, step-000006"
    assert found["rows"]["tokenizer"].endswith(" ids")


def test_a_bundle_shows_the_check_it_passed_at_export(made: dict[str, Path]) -> None:
    found = info_json(made["bundle"])
    assert found["kind"] == "bundle"
    manifest = json.loads((made["bundle"] / "bundle.json").read_text())
    assert manifest["parity"].startswith("max |logit diff|") and "greedy agreement" in manifest["parity"]
    assert found["rows"]["parity at export"] == manifest["parity"]
    assert found["rows"]["bundle"] == "decoder, target portable, fp32"
    unchecked = info_json(made["root"] / "unchecked")
    assert unchecked["rows"]["parity at export"].startswith("not recorded")


@pytest.fixture(scope="module")
def transformers_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random Llama folder, as transformers saves it."""
    return tiny_llama(tmp_path_factory.mktemp("info-hf") / "llama", vocab_size=96)


def test_a_transformers_folder_shows_what_it_imports_as(transformers_folder: Path) -> None:
    """The spec and its figures from config.json, before any import: the parameter count is the checkpoint's."""
    found = info_json(transformers_folder)
    assert found["kind"] == "hugging face folder"
    rows = found["rows"]
    assert rows["model_type"] == "llama" and rows["next"] == f"nima import {transformers_folder} -o MODEL_FOLDER"
    stored = sum(t.numel() for t in load_file(str(transformers_folder / "model.safetensors")).values())
    assert rows["parameters"].startswith(f"{stored:,} ") and f"{stored:,} values" in rows["weights"]
    assert rows["heads"].startswith("4 q / 2 kv") and rows["vocab / context"] == "96 / 64"


def test_a_transformers_folder_without_readable_weights_says_why(transformers_folder: Path, tmp_path: Path) -> None:
    import shutil

    pickled = shutil.copytree(transformers_folder, tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    rows = info_json(pickled)["rows"]
    assert "parameters" in rows and "a pickled PyTorch checkpoint" in rows["import"] and "next" not in rows
    (pickled / "pytorch_model.bin").unlink()
    assert "no model.safetensors" in info_json(pickled)["rows"]["import"]


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"model_type": "falcon"}, "'falcon' is not supported (supported: bart"),
        ({"model_type": "llama", "auto_map": {"AutoModel": "x.Model"}}, "its own Python code"),
    ],
)
def test_a_transformers_folder_nima_cannot_import_says_why(tmp_path: Path, config: dict, reason: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    found = info_json(tmp_path)
    assert found["rows"]["model_type"] == config["model_type"] and reason in found["rows"]["import"]
    assert "next" not in found["rows"]  # no import to suggest


def test_the_table_is_printed(made: dict[str, Path]) -> None:
    code, out, _ = invoke("info", made["bundle"])
    assert code == 0
    assert "· bundle" in out and "parity at export" in out and "model.onnx" in out


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing", "missing: no such file or folder"),
        (lambda p: p, "no nima.json or config.json here"),
        (lambda p: (p / "bad.yaml").write_text("d_model: [") and p / "bad.yaml", "bad.yaml"),
    ],
)
def test_bad_paths_are_one_line(tmp_path: Path, make: object, expected: str) -> None:
    code, out, err = invoke("info", make(tmp_path))  # type: ignore[operator]
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and expected in err


def test_info_runs_without_torch(made: dict[str, Path]) -> None:
    code = (
        "import sys\nsys.modules['torch'] = None\nfrom nima.cli import main\n"
        f"sys.argv = ['nima', 'info', {str(made['run'])!r}, '--json']\nmain()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["kind"] == "run"


def test_info_on_a_transformers_folder_runs_without_torch(transformers_folder: Path) -> None:
    code = (
        "import sys\nsys.modules['torch'] = None\nfrom nima.cli import main\n"
        f"sys.argv = ['nima', 'info', {str(transformers_folder)!r}, '--json']\nmain()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == info_json(transformers_folder)["rows"]  # the figures need no torch


@pytest.mark.parametrize(
    "shape", ["abc", 5, [1e400], [-1], [True], [10**9] * 500, [3] * 100], ids=lambda s: str(s)[:12]
)
def test_a_safetensors_header_with_impossible_shapes_is_reported(
    transformers_folder: Path, tmp_path: Path, shape: object
) -> None:
    """Shapes that are no list of sizes, or whose product passes any file: a row that says so, not a traceback
    (``[10**9] * 500`` made a number past Python's 4,300-digit printing limit)."""
    import shutil
    import struct

    folder = shutil.copytree(transformers_folder, tmp_path / "hf")
    header = json.dumps({"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}).encode()
    header += b" " * (-len(header) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    rows = info_json(folder)["rows"]
    assert "not a readable safetensors file" in rows.get("weights", rows.get("import", "")), rows
    assert "next" not in rows


def test_a_huge_config_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A sparse 1 GB config.json (nothing on disk): refused by its size, as the import refuses it (it was read
    whole: 2 GB of memory)."""
    with (tmp_path / "config.json").open("wb") as f:
        f.truncate(1 << 30)
    code, _, err = invoke("info", tmp_path)
    assert code == 2 and "1,073,741,824 bytes; not a model's JSON file" in err
