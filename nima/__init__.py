"""Nima: a declarative model-graph compiler for transformer language models.

`load_spec` and the spec types import without torch; `build_model` imports torch when called,
so a deployment that only runs ONNX bundles never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nima.spec import ModelSpec, SpecError, load_spec

if TYPE_CHECKING:
    import torch

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
