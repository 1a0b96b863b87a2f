"""`nima.train.rundir`: a resume compares specs through today's schema."""

from __future__ import annotations

from train_support import tiny_spec

from nima.spec import spec_from_dict
from nima.train.rundir import spec_changes


def test_a_field_added_since_the_run_started_is_no_change() -> None:
    """A run's nima.json written before a field existed (GELU's ``approximate``, RMSNorm's ``offset``)
    resumes: the new field's default changes nothing; a real change is still one."""
    spec = spec_from_dict({**tiny_spec(), "ffn": {"kind": "gelu", "hidden": 64}, "norm": {"kind": "rmsnorm"}})
    saved = spec.model_dump(mode="json")
    del saved["ffn"]["approximate"], saved["norm"]["offset"]
    assert spec_changes(saved, spec) == []
    saved["d_model"] = 2 * spec.d_model
    assert spec_changes(saved, spec) == [f"d_model: {2 * spec.d_model} in the run, {spec.d_model} now"]
