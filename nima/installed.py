"""What this install of Nima has: PyTorch (the ``torch`` extra), and which ONNX Runtime (``cpu`` / ``cuda``).

The distribution is ``nima-lm`` (``nima`` on the package index is an unrelated project); the module
and the command are ``nima``. The base install has neither torch nor ONNX Runtime, so each entry
point that needs one asks here first and fails with the line that installs it, instead of a bare
``ModuleNotFoundError``. Imports nothing heavy: the checks look for the modules without loading them.
"""

from __future__ import annotations

import importlib.util

DISTRIBUTION = "nima-lm"
INSTALL_TORCH = f"pip install '{DISTRIBUTION}[torch,cpu]'"
INSTALL_RUNTIME = f"pip install '{DISTRIBUTION}[cpu]' (or '{DISTRIBUTION}[cuda]' for NVIDIA GPUs)"
INSTALL_SERVE = f"pip install '{DISTRIBUTION}[cpu,serve]'"
SERVE_MODULES = ("fastapi", "uvicorn", "prometheus_client", "jinja2")
# The two ONNX Runtime distributions; both install the module `onnxruntime`, so one overwrites the
# other's files and removing either breaks the one left.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (a module blocked or broken counts as absent)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken install
        return False


def torch_problem(what: str) -> str | None:
    """The one-line reason ``what`` cannot run in this install, or None when PyTorch is there."""
    if has_module("torch"):
        return None
    return f"{what} needs PyTorch, which this install lacks: {INSTALL_TORCH}"


def installed_ort_distributions() -> list[str]:
    """Which of the ONNX Runtime distributions are installed (by their metadata)."""
    import importlib.metadata  # here, not above: it costs an import of the runtime 17 ms

    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def runtime_problem(what: str) -> str | None:
    """The one-line reason ``what`` cannot run ONNX Runtime in this install, or None."""
    if has_module("onnxruntime"):
        return None
    return f"{what} needs ONNX Runtime, which this install lacks: {INSTALL_RUNTIME}"


def runtime_clash() -> str | None:
    """A warning when both ONNX Runtime distributions are installed, or None."""
    if len(installed_ort_distributions()) < 2:
        return None
    return (
        "both onnxruntime and onnxruntime-gpu are installed; they install the same module and break each "
        "other: pip uninstall -y onnxruntime onnxruntime-gpu, then " + INSTALL_RUNTIME
    )


def serve_problem(what: str) -> str | None:
    """The one-line reason ``what`` cannot serve in this install (the ``serve`` extra missing), or None."""
    missing = [name for name in SERVE_MODULES if not has_module(name)]
    if not missing:
        return None
    return f"{what} needs {', '.join(missing)}, which this install lacks: {INSTALL_SERVE}"
