"""A provider that cannot start is refused with its reason, never silently replaced by the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from nima.builders.models import DecoderLM
from nima.runtime import GenerateError, Generator, providers
from nima.runtime.providers import require_started


def cuda_falls_back(model: Path) -> bool:
    """What plain onnxruntime does here when asked for CUDA: True when it quietly runs on the CPU instead."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    session = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    return session.get_providers()[0] != "CUDAExecutionProvider"


@pytest.fixture
def falling_back_bundle(bundles: dict[str, tuple[Path, DecoderLM]]) -> Path:
    path, _ = bundles["llama"]
    if not cuda_falls_back(path / "model.onnx"):
        pytest.skip("here the CUDA provider either starts (a GPU) or is not in the onnxruntime build")
    return path


def test_generator_refuses_a_cuda_provider_that_fell_back(falling_back_bundle: Path) -> None:
    with pytest.raises(GenerateError, match=r"provider 'cuda': ONNX Runtime could not start CUDAExecutionProvider"):
        Generator(falling_back_bundle, provider="cuda")


def test_cli_says_it_in_one_line(falling_back_bundle: Path) -> None:
    """In a fresh process, so ORT's own multi-line log (written to the real stderr) would show."""
    command = ["generate", str(falling_back_bundle), "--prompt-ids", "1,2", "--provider", "cuda"]
    done = subprocess.run(
        [sys.executable, "-m", "nima", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: provider 'cuda'") and "--provider cpu" in lines[0], lines


class _Session:
    """Stands in for an ORT session: only the providers it ended up with matter here."""

    def __init__(self, providers: list[str]) -> None:
        self.providers = providers

    def get_providers(self) -> list[str]:
        return self.providers


def test_require_started_checks_the_first_provider() -> None:
    require_started(_Session(["CUDAExecutionProvider", "CPUExecutionProvider"]), "cuda")  # type: ignore[arg-type]
    require_started(_Session(["CPUExecutionProvider"]), "cpu")  # type: ignore[arg-type]
    with pytest.raises(GenerateError, match="could not start CUDAExecutionProvider"):
        require_started(_Session(["CPUExecutionProvider"]), "cuda")  # type: ignore[arg-type]


def test_the_reason_names_a_provider_library_that_is_not_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An onnxruntime without the CUDA provider's library (a CPU-only build moved aside, say)."""
    (tmp_path / "capi").mkdir()
    monkeypatch.setattr(providers.ort, "__file__", str(tmp_path / "__init__.py"))
    assert providers.cuda_failure() == f"{providers.CUDA_LIBRARY} is not installed"
    with pytest.raises(GenerateError, match=f"{providers.CUDA_LIBRARY} is not installed"):
        require_started(_Session(["CPUExecutionProvider"]), "cuda")  # type: ignore[arg-type]
