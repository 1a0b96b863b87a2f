"""Loading specs: `extends:` (presets and files), deep merge, variant switches, `--set`, round trips."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from nima.spec import PRESETS, ModelSpec, SpecError, apply_overrides, load_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SPECS = sorted((ROOT / "specs").glob("*.yaml"))

BASE: dict[str, Any] = {
    "name": "base",
    "vocab_size": 64,
    "max_seq_len": 32,
    "d_model": 32,
    "n_layers": 2,
    "attention": {"n_heads": 4, "n_kv_heads": 2, "qk_norm": True},
    "ffn": {"kind": "gelu", "hidden": 96},
    "position": {"kind": "rope", "theta": 5000.0, "scaling_factor": 2.0},
    "generation": {"temperature": 0.7, "top_k": 5},
}


def write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def base_file(tmp_path: Path) -> Path:
    return write(tmp_path / "base.yaml", BASE)


# --- extends ----------------------------------------------------------------------------------


def test_extends_preset_and_overrides_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path / "child.yaml", {"extends": "tiny", "name": "mine", "n_layers": 2, "attention": {"n_heads": 8}}
    )
    spec = load_spec(path)
    tiny = PRESETS["tiny"]
    assert spec.name == "mine"
    assert spec.n_layers == 2
    assert spec.attention.n_heads == 8
    # Everything else comes from the preset.
    assert spec.d_model == tiny["d_model"]
    assert spec.vocab_size == tiny["vocab_size"]
    assert spec.ffn.hidden == tiny["ffn"]["hidden"]
    assert spec.position.kind == tiny["position"]["kind"]


def test_extends_does_not_modify_the_preset(tmp_path: Path) -> None:
    before = copy.deepcopy(PRESETS["tiny"])
    load_spec(write(tmp_path / "c.yaml", {"extends": "tiny", "attention": {"n_heads": 8, "n_kv_heads": 2}}))
    assert PRESETS["tiny"] == before


def test_extends_chain_of_files_by_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "bases" / "base.yaml", BASE)
    write(tmp_path / "mid" / "mid.yaml", {"extends": "../bases/base.yaml", "n_layers": 3, "name": "mid"})
    top = write(tmp_path / "top.yaml", {"extends": "mid/mid.yaml", "name": "top", "d_model": 64})
    # Paths in `extends` are relative to the file that contains them, not to the working directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(top)
    assert spec.name == "top"  # top wins
    assert spec.d_model == 64  # from top
    assert spec.n_layers == 3  # from mid
    assert spec.vocab_size == 64  # from base
    assert spec.position.theta == 5000.0  # from base


def test_file_extending_a_file_that_extends_a_preset(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", {"extends": "tiny", "n_layers": 1})
    spec = load_spec(write(tmp_path / "q.yaml", {"extends": "p.yaml", "name": "q"}))
    assert (spec.name, spec.n_layers, spec.d_model) == ("q", 1, PRESETS["tiny"]["d_model"])


def test_deep_merge_keeps_sibling_fields(tmp_path: Path, base_file: Path) -> None:
    child = write(
        tmp_path / "child.yaml",
        {"extends": "base.yaml", "attention": {"n_kv_heads": 1}, "generation": {"top_k": 9}},
    )
    spec = load_spec(child)
    assert spec.attention.n_kv_heads == 1
    assert spec.attention.n_heads == 4  # sibling kept
    assert spec.attention.qk_norm is True  # sibling kept
    assert spec.generation.top_k == 9
    assert spec.generation.temperature == 0.7  # sibling kept


def test_same_kind_in_child_merges_variant_fields(tmp_path: Path, base_file: Path) -> None:
    spec = load_spec(write(tmp_path / "c.yaml", {"extends": "base.yaml", "position": {"kind": "rope", "theta": 100.0}}))
    assert spec.position.kind == "rope"
    assert spec.position.theta == 100.0
    assert spec.position.scaling_factor == 2.0  # kept: same kind


def test_switching_kind_by_extends_drops_fields_the_new_kind_lacks(tmp_path: Path, base_file: Path) -> None:
    spec = load_spec(write(tmp_path / "c.yaml", {"extends": "base.yaml", "position": {"kind": "alibi"}}))
    assert spec.position.kind == "alibi"
    assert spec.model_dump()["position"] == {"kind": "alibi"}


def test_switching_kind_by_extends_keeps_shared_fields(tmp_path: Path, base_file: Path) -> None:
    spec = load_spec(write(tmp_path / "c.yaml", {"extends": "base.yaml", "ffn": {"kind": "swiglu"}}))
    assert spec.ffn.kind == "swiglu"
    assert spec.ffn.hidden == 96


def test_switching_pattern_kind_keeps_the_window(tmp_path: Path) -> None:
    base = copy.deepcopy(BASE)
    base["attention"]["pattern"] = {"kind": "local", "window": 8}
    write(tmp_path / "base.yaml", base)
    child = {"extends": "base.yaml", "attention": {"pattern": {"kind": "sparse", "stride": 4}}}
    spec = load_spec(write(tmp_path / "c.yaml", child))
    assert spec.attention.pattern.model_dump() == {"kind": "sparse", "window": 8, "stride": 4}


def test_switching_kind_by_set_drops_and_keeps_fields(base_file: Path) -> None:
    spec = load_spec(base_file, overrides=["position.kind=alibi", "ffn.kind=swiglu"])
    assert spec.model_dump()["position"] == {"kind": "alibi"}
    assert (spec.ffn.kind, spec.ffn.hidden) == ("swiglu", 96)


def test_switching_kind_by_set_with_a_section_value(base_file: Path) -> None:
    spec = load_spec(base_file, overrides=["position={kind: relative, num_buckets: 8}"])
    assert spec.model_dump()["position"] == {"kind": "relative", "num_buckets": 8, "max_distance": 128}


# --- --set overrides --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field", "expected"),
    [
        ("n_layers=5", ("n_layers",), 5),
        ("attention.n_heads=8", ("attention", "n_heads"), 8),
        ("attention.n_kv_heads=4", ("attention", "n_kv_heads"), 4),
        ("generation.temperature=0.25", ("generation", "temperature"), 0.25),
        ("norm.eps=1.0e-6", ("norm", "eps"), 1e-6),
        ("training.optimizer.lr=0.001", ("training", "optimizer", "lr"), 0.001),
        ("bias=false", ("bias",), False),
        ("attention.qk_norm=true", ("attention", "qk_norm"), True),
        ("name=my-model", ("name",), "my-model"),
        ("name=  spaced name ", ("name",), "spaced name"),
        ("norm.kind=rmsnorm", ("norm", "kind"), "rmsnorm"),
        ("generation.eos_token_ids=[1, 2, 63]", ("generation", "eos_token_ids"), [1, 2, 63]),
        ("generation.stop_strings=[END, '\\n\\n']", ("generation", "stop_strings"), ["END", "\\n\\n"]),
        ("training.optimizer.betas=[0.8, 0.9]", ("training", "optimizer", "betas"), (0.8, 0.9)),
        ("training.seq_len=16", ("training", "seq_len"), 16),
        ("generation.seed=7", ("generation", "seed"), 7),
    ],
)
def test_set_override_values(base_file: Path, override: str, field: tuple[str, ...], expected: Any) -> None:
    spec = load_spec(base_file, overrides=[override])
    value: Any = spec
    for part in field:
        value = getattr(value, part)
    assert value == expected
    assert type(value) is type(expected)


def test_set_creates_missing_sections(base_file: Path) -> None:
    spec = load_spec(base_file, overrides=["dropout.attention=0.2", "training.schedule.warmup_steps=5"])
    assert spec.dropout.attention == 0.2
    assert spec.dropout.embedding == 0.0
    assert spec.training.schedule.warmup_steps == 5
    assert spec.training.schedule.kind == "cosine"


def test_set_section_value_merges_with_siblings(base_file: Path) -> None:
    spec = load_spec(base_file, overrides=["attention={n_kv_heads: 1}"])
    assert (spec.attention.n_heads, spec.attention.n_kv_heads, spec.attention.qk_norm) == (4, 1, True)


def test_later_set_wins(base_file: Path) -> None:
    assert load_spec(base_file, overrides=["n_layers=3", "n_layers=4"]).n_layers == 4


def test_set_applies_after_extends(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", {"extends": "tiny", "n_layers": 2})
    spec = load_spec(path, overrides=["n_layers=1", "attention.n_heads=8"])
    assert (spec.n_layers, spec.attention.n_heads, spec.d_model) == (1, 8, PRESETS["tiny"]["d_model"])


def test_apply_overrides_leaves_its_input_alone() -> None:
    data = copy.deepcopy(BASE)
    out = apply_overrides(data, ["attention.n_heads=8", "position.kind=alibi", "dropout.residual=0.1"])
    assert data == BASE
    assert out["attention"] == {"n_heads": 8, "n_kv_heads": 2, "qk_norm": True}
    assert out["position"] == {"kind": "alibi"}
    assert out["dropout"] == {"residual": 0.1}


@pytest.mark.parametrize(
    ("override", "location", "message"),
    [
        ("foo", "foo", "KEY=VALUE"),
        ("a..b=1", "a..b=1", "KEY=VALUE"),
        ("=3", "=3", "KEY=VALUE"),
        (".d_model=3", ".d_model=3", "KEY=VALUE"),
        ("d_model.x=1", "d_model.x", "d_model is a value, not a section"),
        ("attention.n_heads.x.y=1", "attention.n_heads.x.y", "attention.n_heads is a value"),
    ],
)
def test_bad_override_syntax(base_file: Path, override: str, location: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(base_file, overrides=[override])
    problems = info.value.problems
    assert any(p.location == location and message in p.message for p in problems), problems
    assert all(p.source == "--set" for p in problems)


def test_every_bad_override_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as info:
        apply_overrides(copy.deepcopy(BASE), ["foo", "n_layers=3", "d_model.x=1"])
    assert [p.location for p in info.value.problems] == ["foo", "d_model.x"]


def test_override_naming_an_unknown_field_is_reported_against_the_spec(base_file: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(base_file, overrides=["n_layer=3"])
    (problem,) = info.value.problems
    assert problem.location == "n_layer"
    assert "did you mean 'n_layers'" in problem.message
    assert problem.source == str(base_file)


def test_override_breaking_a_rule_is_reported(base_file: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(base_file, overrides=["attention.n_heads=5"])
    assert any(p.location == "attention.n_heads" for p in info.value.problems)


# --- defaults and resolution ----------------------------------------------------------------


def test_dropout_number_sets_all_three(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path / "d.yaml", {**BASE, "dropout": 0.1}))
    assert spec.dropout.model_dump() == {"embedding": 0.1, "attention": 0.1, "residual": 0.1}


def test_dropout_number_by_set(base_file: Path) -> None:
    spec = load_spec(base_file, overrides=["dropout=0.2"])
    assert spec.dropout.model_dump() == {"embedding": 0.2, "attention": 0.2, "residual": 0.2}


def test_omitted_n_kv_heads_resolves_to_n_heads(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    del data["attention"]["n_kv_heads"]
    spec = load_spec(write(tmp_path / "m.yaml", data))
    dumped = spec.model_dump(mode="json")
    assert dumped["attention"]["n_kv_heads"] == 4
    assert spec.n_kv_heads == 4


def test_dump_states_every_field(base_file: Path) -> None:
    dumped = load_spec(base_file).model_dump(mode="json")
    assert set(dumped) == set(ModelSpec.model_fields)
    assert None not in (dumped["attention"]["n_kv_heads"],)


def roundtrip(spec: ModelSpec) -> ModelSpec:
    return ModelSpec.model_validate(json.loads(json.dumps(spec.model_dump(mode="json"))))


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=[p.stem for p in EXAMPLE_SPECS])
def test_example_spec_round_trips(path: Path) -> None:
    spec = load_spec(path)
    again = roundtrip(spec)
    assert again == spec
    assert again.model_dump(mode="json") == spec.model_dump(mode="json")


def test_example_specs_exist() -> None:
    assert len(EXAMPLE_SPECS) >= 5


def test_resolved_file_round_trips_through_a_json_file(tmp_path: Path, base_file: Path) -> None:
    spec = load_spec(base_file, overrides=["position.kind=alibi", "dropout=0.1"])
    out = tmp_path / "resolved.json"
    out.write_text(json.dumps(spec.model_dump(mode="json")), encoding="utf-8")
    assert load_spec(out) == spec
    assert roundtrip(spec) == spec
