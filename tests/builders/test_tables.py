"""Each builder table's keys equal the kinds the spec allows: no variant can be half-added."""

from __future__ import annotations

from nima.builders.ffn import FFNS
from nima.builders.init import INITS
from nima.builders.masks import PATTERNS
from nima.builders.norms import NORMS
from nima.builders.positions import POSITIONS
from nima.spec.variants import AttentionPattern, FfnSpec, InitSpec, NormSpec, PositionSpec, variant_kinds


def test_attention_pattern_table() -> None:
    assert set(PATTERNS) == set(variant_kinds(AttentionPattern))


def test_ffn_table() -> None:
    assert set(FFNS) == set(variant_kinds(FfnSpec))


def test_position_table() -> None:
    assert set(POSITIONS) == set(variant_kinds(PositionSpec))


def test_norm_table() -> None:
    assert set(NORMS) == set(variant_kinds(NormSpec))


def test_init_table() -> None:
    assert set(INITS) == set(variant_kinds(InitSpec))


def test_variant_kinds_reads_unions_and_literals() -> None:
    assert variant_kinds(PositionSpec) == ("sinusoidal", "learned", "relative", "rope", "alibi", "none")
    assert variant_kinds(NormSpec) == ("layernorm", "rmsnorm")
