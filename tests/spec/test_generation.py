"""`GenerationSpec` is one table read two ways: Pydantic validates it inside a spec, `check_generation`
for the runtime. Both must accept and refuse the same values, and give the same result."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import numpy as np
import pydantic
import pytest

import nima.spec
from nima.spec import ModelSpec, spec_from_dict
from nima.spec.generation import GenerationSpec, OptionError, check_generation, option_annotations
from nima.spec.presets import PRESETS
from nima.spec.schema import spec_json_schema

# Values of every shape an option might be given; strings that spell numbers or booleans are left out:
# Pydantic's lax mode reads them (for text files), the runtime, given typed values, refuses them.
VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2, 3, 64, 65, 10**30, 0.0, 0.5, 1.0, 1.5, 2.0, -2.0, -2.5, 2.5,
    float("inf"), float("nan"), "never", "x", "", [], [1, 2], [-1], (1, 2), ["a", ""], [1.0], [1.5],
    [True], [None], {"a": 1}, np.int64(5), np.float32(0.5), np.float64(3.0), [np.int32(7)], 10**400, 1e30, 2.0**62,
]  # fmt: skip
# (numpy's booleans are left out too: Pydantic reads np.True_ as 1 for a number; the runtime refuses it)


def pydantic_reading(name: str, value: Any) -> tuple[bool, Any]:
    """(accepted, the option's value or Pydantic's message) when a spec's generation section sets it."""
    data = {**PRESETS["tiny"], "generation": {name: value}}
    try:
        spec = ModelSpec.model_validate(data, context={"defer_rules": True})  # fields only, as the runtime
    except pydantic.ValidationError as err:
        return False, err.errors()[0]["msg"]
    return True, getattr(spec.generation, name)


def runtime_reading(name: str, value: Any) -> tuple[bool, Any]:
    try:
        return True, getattr(check_generation({name: value}), name)
    except OptionError as err:
        return False, err.message


@pytest.mark.parametrize("name", list(option_annotations()))
def test_the_runtime_reads_each_option_as_the_spec_does(name: str) -> None:
    refused = 0
    for value in VALUES:
        spec_ok, spec_value = pydantic_reading(name, value)
        ok, got = runtime_reading(name, value)
        assert ok == spec_ok, (name, value, spec_value, got)
        if ok:  # the same value, of the same type (3.0 for an int option is 3)
            assert type(got) is type(spec_value) and repr(got) == repr(spec_value), (name, value)
        else:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and name != "early_stopping":  # out of bounds, infinite, fractional: in Pydantic's words
                assert got == spec_value, (name, value)  # (early_stopping's adds "or 'never'")
            refused += 1
    assert refused >= 10  # every option refuses most of these shapes: the comparison tests something


def test_unknown_options_and_defaults() -> None:
    with pytest.raises(OptionError) as err:
        check_generation({"topp": 0.9})
    assert (err.value.field, err.value.message) == ("topp", "unknown option")
    assert check_generation({}) == GenerationSpec()
    assert asdict(check_generation({"stop_strings": ("a",), "seed": 3.0})) == {
        **asdict(GenerationSpec()),
        "stop_strings": ["a"],
        "seed": 3,
    }
    with pytest.raises(OptionError) as err:
        check_generation({"eos_token_ids": [1, True]})
    assert str(err.value) == "eos_token_ids.1: Input should be a valid integer (got True)"


def test_an_instance_built_in_python_is_checked_when_a_spec_takes_it() -> None:
    """The dataclass checks nothing when built; a spec revalidates it (as it did the Pydantic model)."""
    spec = spec_from_dict({"extends": "tiny"})
    with pytest.raises(pydantic.ValidationError, match="less than or equal to 1"):
        ModelSpec.model_validate({**PRESETS["tiny"], "generation": GenerationSpec(top_p=5.0)})
    with pytest.raises(pydantic.ValidationError, match="less than or equal to 1"):
        spec.generation = GenerationSpec(top_p=5.0)


def test_a_spec_names_bad_generation_fields() -> None:
    """The spec's rule against booleans for numbers reaches the generation section and its lists."""
    with pytest.raises(nima.spec.SpecError) as err:
        spec_from_dict({"extends": "tiny", "generation": {"top_p": True, "eos_token_ids": [2, False], "topp": 1}})
    lines = str(err.value).splitlines()
    assert "<spec>: generation.top_p: input should be a valid number (got true)" in lines
    assert "<spec>: generation.eos_token_ids.1: input should be a valid integer (got false)" in lines
    assert "<spec>: generation.topp: unknown field (did you mean 'top_p'?)" in lines
    assert spec_from_dict({"extends": "tiny", "generation": {"top_p": 0.9}}).generation.top_p == 0.9


def test_the_schema_describes_every_option_on_one_line() -> None:
    section = spec_json_schema()["$defs"]["GenerationSpec"]
    assert section["additionalProperties"] is False
    assert list(section["properties"]) == list(option_annotations())
    for name, field in section["properties"].items():
        assert field["description"] and "\n" not in field["description"], name
    assert section["properties"]["top_p"]["exclusiveMinimum"] == 0 and section["properties"]["top_p"]["maximum"] == 1


def test_the_section_round_trips_through_json() -> None:
    spec = spec_from_dict({"extends": "tiny", "generation": {"early_stopping": "never", "stop_strings": ["\n"]}})
    data = json.loads(json.dumps(spec.model_dump(mode="json")))
    assert check_generation(data["generation"]) == spec.generation
    assert not math.isnan(spec.generation.temperature)


def test_every_spec_name_loads_on_first_use() -> None:
    """`nima.spec` imports its names lazily (the runtime imports `nima.spec.generation` alone)."""
    assert sorted(nima.spec.__all__) == sorted(nima.spec._HOMES)
    for name in nima.spec.__all__:
        assert getattr(nima.spec, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = nima.spec.nothing  # type: ignore[attr-defined]
