"""Generated input for the spec loader, ``--set`` and the CLI's argument parsing: whatever comes in, the
outcome is a valid spec (or a command that succeeds) or one ``error:`` line per problem naming where —
never another exception, never more than a few seconds. Fixed seed (``derandomize``), so CI reruns the
same thousands of cases."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from cli_support import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nima.spec import ModelSpec, SpecError, spec_from_dict
from nima.spec.problems import all_field_names

KEYS = [*all_field_names(), "kind"]  # real field names, so documents reach deep into the sections
KINDS = ["full", "local", "sparse", "gelu", "swiglu", "relu", "rope", "alibi", "learned", "rmsnorm", "layernorm"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(KINDS)
    | st.text(max_size=6)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=16,
)
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), VALUES, max_size=10)
BASE = {"extends": "tiny"}  # a valid start, so that some generated documents are valid specs
FAST = settings(max_examples=400, deadline=5000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def outcome(data: dict[str, Any], overrides: list[str] | None = None) -> ModelSpec | SpecError:
    start = time.monotonic()
    try:
        result: ModelSpec | SpecError = spec_from_dict(data, overrides=overrides)
    except SpecError as err:
        assert err.problems and all(str(p) for p in err.problems)
        result = err
    assert time.monotonic() - start < 5
    return result


@FAST
@given(DOCUMENTS)
def test_any_document_is_a_spec_or_errors(document: dict[str, Any]) -> None:
    outcome(document)


@FAST
@given(DOCUMENTS)
def test_any_document_over_a_preset(document: dict[str, Any]) -> None:
    outcome({**BASE, **document})


@FAST
@given(st.lists(st.text(max_size=30) | st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=12))))
def test_any_set_flags(overrides: list[str]) -> None:
    outcome(dict(BASE), overrides)


FLAGS = ["--set", "-s", "--json", "-o", "--seed", "--force", "--help", "--bogus", "--", "x=1"]


@settings(max_examples=150, deadline=10000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FLAGS) | st.text(max_size=10), max_size=6))
def test_any_build_arguments(tmp_path_factory: Any, arguments: list[str]) -> None:
    """`nima build SPEC ARGS`: exit 0, or 2 with every stderr line an ``error:`` line; nothing written
    beside the spec (``-o`` is left out: writing a model is not what this test is about)."""
    folder = tmp_path_factory.mktemp("build-args")
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump({**BASE, "name": "generated"}))
    arguments = [a for a in arguments if not a.startswith("-o") and a not in ("--out",)]
    code, stderr = run_main(["build", str(spec), *arguments])
    assert code in (0, 2), (code, stderr)
    if code == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines and all(line.startswith("error: ") for line in lines), stderr
    assert sorted(p.name for p in Path(folder).iterdir()) == ["spec.yaml"]
