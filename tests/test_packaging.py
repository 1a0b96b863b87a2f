"""The built distribution's metadata: its name, and what each install level brings.

The base install (``pip install nima-lm``) has no torch and no ONNX Runtime; ``[cpu]`` adds the CPU
ONNX Runtime and no CUDA library; ``[cuda]`` adds onnxruntime-gpu with its CUDA libraries; no install
level the docs name brings both ONNX Runtime distributions (they install the same module and break
each other). The metadata is what setuptools writes for a wheel (PEP 517's metadata hook), read the
way pip reads it (`packaging`'s marker evaluation per extra).
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
ORT = {"onnxruntime", "onnxruntime-gpu"}
HEAVY = {"torch", "onnx", "onnxscript", "onnxruntime-genai", "onnxruntime-genai-cuda", *ORT}


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> email.message.Message:
    """METADATA as the wheel would carry it, built from a copy of the sources (the hook writes egg-info there)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "nima", source / "nima", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("metadata")
    code = f"from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dist_info = out / proc.stdout.strip().splitlines()[-1]
    return email.parser.Parser().parsestr((dist_info / "METADATA").read_text())


def brought(metadata: email.message.Message, *extras: str) -> dict[str, Requirement]:
    """The direct requirements of ``pip install nima-lm[extras]``, by name (nima-lm's own extras expanded)."""
    found: dict[str, Requirement] = {}
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        wanted = any(requirement.marker is None or requirement.marker.evaluate({"extra": e}) for e in ("", *extras))
        if not wanted:
            continue
        if requirement.name == metadata["Name"]:  # a self-reference: nima-lm[torch,cpu]
            found.update(brought(metadata, *requirement.extras))
        else:
            found[requirement.name] = requirement
    return found


def test_the_distribution_is_ours(metadata: email.message.Message) -> None:
    assert metadata["Name"] == "nima-lm"  # `nima` on the package index is an unrelated project
    assert set(metadata.get_all("Provides-Extra")) >= {"cpu", "cuda", "torch", "test"}


def test_the_base_install_has_no_torch_and_no_onnx_runtime(metadata: email.message.Message) -> None:
    base = brought(metadata)
    assert {"pydantic", "pyyaml", "typer", "rich", "numpy", "tokenizers"} <= set(base)
    assert not set(base) & HEAVY
    assert not [name for name in base if name.startswith("nvidia")]


def test_cpu_brings_the_cpu_onnx_runtime_and_no_cuda(metadata: email.message.Message) -> None:
    cpu = brought(metadata, "cpu")
    assert set(cpu) & ORT == {"onnxruntime"}
    assert not [name for name in cpu if name.startswith("nvidia") or "cuda" in name or "gpu" in name]


def test_cuda_brings_onnxruntime_gpu_with_its_cuda_libraries(metadata: email.message.Message) -> None:
    cuda = brought(metadata, "cuda")
    assert set(cuda) & ORT == {"onnxruntime-gpu"}
    assert cuda["onnxruntime-gpu"].extras == {"cuda", "cudnn"}  # the CUDA and cuDNN wheels ORT loads


def test_serve_brings_the_server_and_no_torch(metadata: email.message.Message) -> None:
    serve = brought(metadata, "cpu", "serve")
    assert {"fastapi", "uvicorn", "prometheus-client", "jinja2", "onnxruntime"} <= set(serve)
    assert "torch" not in serve


@pytest.mark.parametrize(
    "extras",
    [(), ("cpu",), ("cuda",), ("torch",), ("torch", "cpu"), ("torch", "cuda"), ("cpu", "serve"), ("test",)],
)
def test_no_documented_install_brings_both_onnx_runtimes(metadata: email.message.Message, extras: tuple) -> None:
    assert len(set(brought(metadata, *extras)) & ORT) <= 1


def test_this_environment_has_one_onnx_runtime_and_no_cuda_libraries() -> None:
    """The test install (``[test]`` = ``[torch,cpu]`` and test tools) as pip resolved it here."""
    installed = set()
    for name in ORT:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        installed.add(name)
    assert installed == {"onnxruntime"}
    requires = [Requirement(r).name for r in importlib.metadata.requires("onnxruntime") or []]
    assert not [name for name in requires if name.startswith("nvidia")]
