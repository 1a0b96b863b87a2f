"""Nima: a declarative model-graph compiler for transformer language models.

`load_spec` and the spec types import without torch; `build_model` imports torch when called,
so a deployment that only runs ONNX bundles never loads it. The spec names load on first use
(`__getattr__`): ``import nima.runtime`` runs this file, and the runtime needs no Pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from nima.spec import ModelSpec, SpecError, load_spec

__version__ = "0.1.0"

__all__ = ["ModelSpec", "SpecError", "__version__", "build_model", "load_spec"]


def build_model(spec: ModelSpec, seed: int | None = None) -> torch.nn.Module:
    """Build the PyTorch module for ``spec`` (see `nima.builders.build_model`)."""
    from nima.installed import torch_problem

    problem = torch_problem("nima.build_model")
    if problem:
        raise ModuleNotFoundError(problem, name="torch")
    from nima.builders import build_model as _build

    return _build(spec, seed=seed)


def __getattr__(name: str) -> Any:
    """``nima.ModelSpec``, ``nima.SpecError``, ``nima.load_spec``: imported from `nima.spec` when first asked for."""
    if name in ("ModelSpec", "SpecError", "load_spec"):
        return getattr(importlib.import_module("nima.spec"), name)
    raise AttributeError(f"module 'nima' has no attribute {name!r}")
