"""`nima.installed`: the clash warning when both ONNX Runtime distributions are installed (the install
hints for a missing torch or ONNX Runtime are run end to end in tests/runtime/test_without_torch.py)."""

from __future__ import annotations

import importlib.metadata

import pytest
import typer

from nima import installed
from nima.cli.common import require_runtime


def pretend_installed(monkeypatch: pytest.MonkeyPatch, names: set[str]) -> None:
    real = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name in installed.ORT_DISTRIBUTIONS:
            if name not in names:
                raise importlib.metadata.PackageNotFoundError(name)
            return real("onnxruntime")  # any distribution object will do
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


@pytest.mark.parametrize("names", [{"onnxruntime"}, {"onnxruntime-gpu"}, set()])
def test_one_or_no_onnx_runtime_is_no_clash(monkeypatch: pytest.MonkeyPatch, names: set[str]) -> None:
    pretend_installed(monkeypatch, names)
    assert installed.installed_ort_distributions() == sorted(names)
    assert installed.runtime_clash() is None


def test_both_onnx_runtimes_are_a_warning_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pretend_installed(monkeypatch, {"onnxruntime", "onnxruntime-gpu"})
    require_runtime("generate")  # a warning, not a failure: the module that won may well work
    err = capsys.readouterr().err
    assert err.startswith("warning: both onnxruntime and onnxruntime-gpu are installed;")
    assert "pip uninstall -y onnxruntime onnxruntime-gpu, then pip install 'nima-lm[cpu]'" in err


def test_a_missing_onnx_runtime_fails_before_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(installed, "has_module", lambda name: name != "onnxruntime")
    with pytest.raises(typer.Exit) as exit_info:
        require_runtime("generate")
    assert exit_info.value.exit_code == 2
