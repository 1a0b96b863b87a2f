"""Every layer's family table has a row for each architecture the spec allows, and nothing else: a
third family (encoder-only, say) is one row per layer, and a test fails until each layer has it."""

from __future__ import annotations

import pytest

from nima.builders.models import MODELS
from nima.export.families import FAMILIES as EXPORT
from nima.export.options import TARGETS
from nima.runtime.families import FAMILIES as RUNTIME
from nima.spec import spec_from_dict
from nima.spec.model import ARCHITECTURES, Architecture
from nima.spec.variants import variant_kinds
from nima.train.families import FAMILIES as TRAIN

ARCH = set(variant_kinds(Architecture))


@pytest.mark.parametrize(
    ("layer", "table"),
    [("spec", ARCHITECTURES), ("builders", MODELS), ("train", TRAIN), ("export", EXPORT), ("runtime", RUNTIME)],
)
def test_each_layer_has_a_row_per_architecture(layer: str, table: dict[str, object]) -> None:
    assert set(table) == ARCH, layer


def test_export_targets_are_the_families_targets() -> None:
    """`--target` offers exactly the targets some family exports to; every family has the portable one."""
    assert set().union(*(family.targets for family in EXPORT.values())) == set(TARGETS)
    assert all("portable" in family.targets for family in EXPORT.values())


@pytest.mark.parametrize("architecture", sorted(ARCH))
def test_the_runtime_reads_the_graphs_its_model_has(architecture: str) -> None:
    """The runtime's graph roles: a decoder for every family, an encoder where the model has an encoder
    stack (the stacks the spec lists for the architecture)."""
    spec = spec_from_dict(
        {
            "architecture": architecture,
            "vocab_size": 16,
            "max_seq_len": 8,
            "d_model": 8,
            "n_layers": 1,
            "attention": {"n_heads": 2},
            "ffn": {"hidden": 8},
            "position": {"kind": "rope"},
        }
    )
    assert set(RUNTIME[architecture].roles) == {stack.name for stack in spec.stacks}
