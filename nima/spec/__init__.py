"""The Nima spec: a Pydantic description of a transformer LM. Imports no torch."""

from nima.spec.derived import Figures, figures, parameter_count
from nima.spec.errors import Problem, SpecError
from nima.spec.load import apply_overrides, load_resolved_spec, load_spec, read_spec_file, spec_from_dict
from nima.spec.model import ModelSpec, rule_problems
from nima.spec.presets import PRESETS
from nima.spec.sections import AttentionSpec, DropoutSpec, GenerationSpec, TrainingSpec
from nima.spec.variants import FfnSpec, NormSpec

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
