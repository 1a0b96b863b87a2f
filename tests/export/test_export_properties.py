"""Generated `nima export` arguments over a small model folder: each run succeeds or prints `error:` lines
with exit code 2 (1 for a failed check) — never a traceback — and a failure leaves the target unwritten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bundle_helpers import SPEC
from cli_support import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nima.builders import build_model, save_build
from nima.spec import spec_from_dict

FLAGS = ["--onnx", "--hf", "--dtype", "--quantize", "--target", "--no-verify", "--verify", "--force", "--set"]
VALUES = st.sampled_from(["fp32", "fp16", "bf16", "int8", "int4", "int2", "ort", "portable", "x=1", "d_model=8", ""])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = spec_from_dict({**SPEC, "n_layers": 1, "d_model": 16, "attention": {"n_heads": 2}})
    return save_build(build_model(spec, seed=0), spec, tmp_path_factory.mktemp("export-args") / "model")


@settings(max_examples=40, deadline=60000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FLAGS) | VALUES | st.text(max_size=5), max_size=6))
def test_any_export_arguments(model_dir: Path, tmp_path_factory: Any, arguments: list[str]) -> None:
    out = tmp_path_factory.mktemp("out") / "bundle"
    code, stderr = run_main(["export", str(model_dir), "-o", str(out), *arguments])
    assert code in (0, 1, 2), (code, stderr)
    if code:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines and all(line.startswith("error: ") for line in lines), stderr
        assert not out.exists()
