"""The Nima spec: a Pydantic description of a transformer LM. Imports no torch.

The names below load on first use (`__getattr__`), so ``nima.spec.generation``, which the runtime
reads, imports without the Pydantic models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nima.spec.derived import Figures, figures, parameter_count
    from nima.spec.errors import Problem, SpecError
    from nima.spec.generation import GenerationSpec
    from nima.spec.load import apply_overrides, load_resolved_spec, load_spec, read_spec_file, spec_from_dict
    from nima.spec.model import ModelSpec, rule_problems
    from nima.spec.presets import PRESETS
    from nima.spec.sections import AttentionSpec, DropoutSpec, TrainingSpec
    from nima.spec.variants import FfnSpec, NormSpec

# name -> the module that defines it
_HOMES = {
    "Figures": "nima.spec.derived",
    "figures": "nima.spec.derived",
    "parameter_count": "nima.spec.derived",
    "Problem": "nima.spec.errors",
    "SpecError": "nima.spec.errors",
    "apply_overrides": "nima.spec.load",
    "load_resolved_spec": "nima.spec.load",
    "load_spec": "nima.spec.load",
    "read_spec_file": "nima.spec.load",
    "spec_from_dict": "nima.spec.load",
    "ModelSpec": "nima.spec.model",
    "rule_problems": "nima.spec.model",
    "PRESETS": "nima.spec.presets",
    "GenerationSpec": "nima.spec.generation",
    "AttentionSpec": "nima.spec.sections",
    "DropoutSpec": "nima.spec.sections",
    "TrainingSpec": "nima.spec.sections",
    "FfnSpec": "nima.spec.variants",
    "NormSpec": "nima.spec.variants",
}

__all__ = [
    "PRESETS",
    "AttentionSpec",
    "DropoutSpec",
    "FfnSpec",
    "Figures",
    "GenerationSpec",
    "ModelSpec",
    "NormSpec",
    "Problem",
    "SpecError",
    "TrainingSpec",
    "apply_overrides",
    "figures",
    "load_resolved_spec",
    "load_spec",
    "parameter_count",
    "read_spec_file",
    "rule_problems",
    "spec_from_dict",
]


def __getattr__(name: str) -> Any:
    """A spec name, imported from its module when first asked for."""
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'nima.spec' has no attribute {name!r}")
