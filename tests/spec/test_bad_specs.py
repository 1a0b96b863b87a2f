"""Bad spec files: each one must fail with a `SpecError` naming the file, the field and the fault.

Every case is written to a real file and goes through `load_spec`, so file handling (YAML,
JSON, syntax errors, `extends:`) is exercised along with validation.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from nima.spec import Problem, SpecError, load_spec

# A small valid decoder that each case breaks in one place.
VALID: dict[str, Any] = {
    "name": "tiny-test",
    "vocab_size": 64,
    "max_seq_len": 32,
    "d_model": 32,
    "n_layers": 2,
    "attention": {"n_heads": 4},
    "ffn": {"kind": "gelu", "hidden": 64},
    "position": {"kind": "learned"},
}

DROP = object()  # as a value in `spec(...)`: remove the field


def spec(**changes: Any) -> dict[str, Any]:
    """VALID with changes; a key ``a__b`` sets the nested field ``a.b``."""
    data = copy.deepcopy(VALID)
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DROP:
            node.pop(last)
        else:
            node[last] = value
    return data


class Raw(str):
    """File text written verbatim instead of a dict dumped as YAML/JSON."""


MISSING = object()  # no file at all
DIRECTORY = object()  # a directory where the file should be

# (description, content, file name, expected location, expected message substring)
CASES: list[tuple[str, Any, str, str, str]] = [
    # --- field types and ranges -------------------------------------------------------------
    ("missing vocab_size", spec(vocab_size=DROP), "spec.yaml", "vocab_size", "required field is missing"),
    ("missing ffn.hidden (json)", spec(ffn={"kind": "gelu"}), "spec.json", "ffn.hidden", "required field is missing"),
    ("d_model is a word", spec(d_model="big"), "spec.yaml", "d_model", "valid integer"),
    ("d_model is fractional", spec(d_model=32.5), "spec.json", "d_model", "fractional part"),
    ("n_layers is a boolean", spec(n_layers=True), "spec.yaml", "n_layers", "valid integer (got true)"),
    ("n_heads is a boolean (json)", spec(attention__n_heads=False), "spec.json", "attention.n_heads", "valid integer"),
    ("tie_embeddings is a number", spec(tie_embeddings=1), "spec.yaml", "tie_embeddings", "valid boolean (got 1)"),
    ("lr is a boolean", spec(training={"optimizer": {"lr": True}}), "spec.yaml", "training.optimizer.lr", "got true"),
    ("do_sample is a number", spec(generation={"do_sample": 0}), "spec.json", "generation.do_sample", "valid boolean"),
    ("attention is a number", spec(attention=4), "spec.yaml", "attention", "valid dictionary"),
    ("negative n_layers", spec(n_layers=-1), "spec.yaml", "n_layers", "greater than 0"),
    ("zero vocab_size", spec(vocab_size=0), "spec.json", "vocab_size", "greater than 0"),
    ("zero max_seq_len", spec(max_seq_len=0), "spec.yaml", "max_seq_len", "greater than 0"),
    ("zero n_kv_heads", spec(attention__n_kv_heads=0), "spec.yaml", "attention.n_kv_heads", "greater than 0"),
    ("zero norm eps", spec(norm={"eps": 0}), "spec.yaml", "norm.eps", "greater than 0"),
    ("empty name", spec(name=""), "spec.yaml", "name", "at least 1 character"),
    (
        "negative learning rate, three levels deep",
        spec(training={"optimizer": {"lr": -1}}),
        "spec.yaml",
        "training.optimizer.lr",
        "greater than 0",
    ),
    (
        "betas with one value",
        spec(training={"optimizer": {"betas": [0.9]}}),
        "spec.yaml",
        "training.optimizer.betas.1",
        "required field is missing",
    ),
    # --- unknown fields -----------------------------------------------------------------------
    ("misspelt top-level field", spec(n_layer=3), "spec.yaml", "n_layer", "did you mean 'n_layers'"),
    ("misspelt field (json)", spec(vocab_sise=3), "spec.json", "vocab_sise", "did you mean 'vocab_size'"),
    ("misspelt nested field", spec(attention__n_head=4), "spec.yaml", "attention.n_head", "did you mean 'n_heads'"),
    ("unrelated unknown field", spec(colour="blue"), "spec.yaml", "colour", "unknown field"),
    # suggestions come from the section's own fields: not 'eps' (norm) for training.steps
    ("word of a field", spec(training={"steps": 5}), "spec.yaml", "training.steps", "did you mean 'max_steps'"),
    (
        "misspelt field of a variant",
        spec(training={"schedule": {"kind": "cosine", "warmup": 5}}),
        "spec.yaml",
        "training.schedule.warmup",
        "did you mean 'warmup_steps'",
    ),
    (
        "field of another variant (theta on alibi)",
        spec(position={"kind": "alibi", "theta": 10000.0}),
        "spec.yaml",
        "position.theta",
        "unknown field",
    ),
    (
        "field of another variant (window on full)",
        spec(attention__pattern={"kind": "full", "window": 8}),
        "spec.yaml",
        "attention.pattern.window",
        "unknown field",
    ),
    # --- unknown kinds: discriminated unions ----------------------------------------------------
    (
        "unknown attention pattern",
        spec(attention__pattern={"kind": "diagonal"}),
        "spec.yaml",
        "attention.pattern.kind",
        "'diagonal'",
    ),
    ("unknown position kind", spec(position={"kind": "xpos"}), "spec.yaml", "position.kind", "'xpos'"),
    ("unknown init kind", spec(init={"kind": "kaiming"}), "spec.json", "init.kind", "'kaiming'"),
    ("position without kind", spec(position={}), "spec.yaml", "position.kind", "required field is missing"),
    (
        "local pattern without window",
        spec(attention__pattern={"kind": "local"}),
        "spec.yaml",
        "attention.pattern.window",
        "required field is missing",
    ),
    # --- unknown kinds: Literal fields ----------------------------------------------------------
    ("unknown ffn kind", spec(ffn__kind="mish"), "spec.yaml", "ffn.kind", "'swiglu'"),
    ("unknown norm kind", spec(norm={"kind": "batchnorm"}), "spec.yaml", "norm.kind", "'rmsnorm'"),
    ("unknown norm placement", spec(norm={"placement": "peri"}), "spec.yaml", "norm.placement", "'post'"),
    (
        "a pattern in a cycle, its field wrong",
        spec(attention__pattern=[{"kind": "full"}, {"kind": "local", "window": 0}]),
        "spec.yaml",
        "attention.pattern.1.window",
        "greater than 0",
    ),
    (
        "a window in a cycle as long as the context",
        spec(attention__pattern=[{"kind": "local", "window": 4096}, {"kind": "full"}]),
        "spec.yaml",
        "attention.pattern.0.window",
        "must be smaller than max_seq_len",
    ),
    (
        "an empty pattern cycle",
        spec(attention__pattern=[]),
        "spec.yaml",
        "attention.pattern",
        "an empty list",
    ),
    ("unknown backend", spec(attention__backend="flash"), "spec.yaml", "attention.backend", "'sdpa'"),
    ("unknown architecture", spec(architecture="encoder"), "spec.yaml", "architecture", "'encoder-decoder'"),
    (
        "unknown schedule kind",
        spec(training={"schedule": {"kind": "step"}}),
        "spec.yaml",
        "training.schedule.kind",
        "'cosine'",
    ),
    # --- variant parameters -----------------------------------------------------------------
    (
        "sparse stride of 1",
        spec(attention__pattern={"kind": "sparse", "window": 4, "stride": 1}),
        "spec.yaml",
        "attention.pattern.stride",
        "greater than 1",
    ),
    (
        "rope scaling below 1",
        spec(position={"kind": "rope", "scaling_factor": 0.5}),
        "spec.yaml",
        "position.scaling_factor",
        "greater than or equal to 1",
    ),
    # --- cross-field rules --------------------------------------------------------------------
    ("heads do not divide d_model", spec(attention__n_heads=5), "spec.yaml", "attention.n_heads", "divide d_model 32"),
    (
        "kv heads do not divide heads",
        spec(attention__n_kv_heads=3),
        "spec.yaml",
        "attention.n_kv_heads",
        "does not divide n_heads 4",
    ),
    ("more kv heads than heads", spec(attention__n_kv_heads=8), "spec.yaml", "attention.n_kv_heads", "more than"),
    (
        "rope with an odd head dim",
        spec(d_model=36, position={"kind": "rope"}),
        "spec.yaml",
        "position.kind",
        "even head dim, got 9",
    ),
    (
        "rope with an odd explicit head_dim",
        spec(d_model=512, attention={"n_heads": 6, "head_dim": 63}, position={"kind": "rope"}),
        "spec.yaml",
        "position.kind",
        "even head dim, got 63",
    ),
    (
        "sinusoidal with an odd d_model",
        spec(d_model=33, attention__n_heads=3, position={"kind": "sinusoidal"}),
        "spec.yaml",
        "position.kind",
        "even d_model",
    ),
    (
        "local window as long as the context",
        spec(attention__pattern={"kind": "local", "window": 32}),
        "spec.yaml",
        "attention.pattern.window",
        "smaller than max_seq_len 32",
    ),
    (
        "sparse stride as long as the context",
        spec(attention__pattern={"kind": "sparse", "window": 4, "stride": 32}),
        "spec.yaml",
        "attention.pattern.stride",
        "smaller than max_seq_len 32",
    ),
    (
        "encoder layers on a decoder",
        spec(n_encoder_layers=2),
        "spec.yaml",
        "n_encoder_layers",
        "only an encoder-decoder",
    ),
    (
        "training.seq_len longer than max_seq_len",
        spec(training={"seq_len": 64}),
        "spec.yaml",
        "training.seq_len",
        "longer than max_seq_len 32",
    ),
    # --- dropout and generation -----------------------------------------------------------------
    ("dropout shorthand of 1", spec(dropout=1.0), "spec.yaml", "dropout.attention", "less than 1"),
    ("dropout section above 1", spec(dropout={"residual": 1.5}), "spec.yaml", "dropout.residual", "less than 1"),
    ("negative dropout", spec(dropout={"embedding": -0.1}), "spec.json", "dropout.embedding", "greater than or equal"),
    ("top_p of 0", spec(generation={"top_p": 0.0}), "spec.yaml", "generation.top_p", "greater than 0"),
    ("top_p above 1", spec(generation={"top_p": 1.5}), "spec.yaml", "generation.top_p", "less than or equal to 1"),
    (
        "negative temperature",
        spec(generation={"temperature": -0.5}),
        "spec.yaml",
        "generation.temperature",
        "greater than or equal to 0",
    ),
    ("zero beams", spec(generation={"num_beams": 0}), "spec.yaml", "generation.num_beams", "greater than or equal"),
    (
        "min_new_tokens above max_new_tokens",
        spec(generation={"min_new_tokens": 10, "max_new_tokens": 5}),
        "spec.yaml",
        "generation.min_new_tokens",
        "more than max_new_tokens 5",
    ),
    (
        "eos id equal to vocab_size",
        spec(generation={"eos_token_ids": [1, 64]}),
        "spec.yaml",
        "generation.eos_token_ids.1",
        "outside the vocabulary",
    ),
    (
        "negative eos id",
        spec(generation={"eos_token_ids": [-1]}),
        "spec.json",
        "generation.eos_token_ids.0",
        "outside the vocabulary",
    ),
    (
        "more return sequences than beams",
        spec(generation={"num_return_sequences": 3}),
        "spec.yaml",
        "generation.num_return_sequences",
        "num_beams",
    ),
    # --- files ----------------------------------------------------------------------------------
    ("YAML syntax error", Raw("name: [unclosed\nvocab_size: 64\n"), "spec.yaml", "", "YAML syntax error"),
    ("YAML bad indentation", Raw("vocab_size: 64\n  d_model: 32\n"), "spec.yml", "", "YAML syntax error"),
    ("invalid JSON", Raw('{"vocab_size": 64,}'), "spec.json", "", "JSON syntax error"),
    (
        "YAML key given twice",
        Raw("vocab_size: 64\nd_model: 32\nvocab_size: 128\n"),
        "spec.yaml",
        "",
        "duplicate key 'vocab_size'",
    ),
    (
        "YAML key given twice in a section",
        Raw("vocab_size: 64\nattention:\n  n_heads: 4\n  n_heads: 8\n"),
        "spec.yaml",
        "",
        "duplicate key 'n_heads'",
    ),
    (
        "JSON key given twice",
        Raw('{"vocab_size": 64, "vocab_size": 128}'),
        "spec.json",
        "",
        "duplicate key 'vocab_size'",
    ),
    ("empty file", Raw(""), "spec.yaml", "", "is empty"),
    ("comments only", Raw("# nothing here\n"), "spec.yaml", "", "is empty"),
    ("top level is a list", Raw("- vocab_size: 64\n- d_model: 32\n"), "spec.yaml", "", "got list"),
    ("top level is a number (json)", Raw("42"), "spec.json", "", "got int"),
    ("missing file", MISSING, "spec.yaml", "", "file not found"),
    ("a directory", DIRECTORY, "spec.yaml", "", "is a directory"),
    ("unknown preset", {"extends": "huge", "name": "x"}, "spec.yaml", "extends", "'huge' is neither a preset"),
    ("extends is not a string", {"extends": 3}, "spec.yaml", "extends", "preset name or a path"),
    (
        "preset with a broken override",
        {"extends": "tiny", "attention": {"n_heads": 5}},
        "spec.yaml",
        "attention.n_heads",
        "divide d_model 256",
    ),
]


def write_case(tmp_path: Path, content: Any, filename: str) -> Path:
    path = tmp_path / filename
    if content is MISSING:
        return path
    if content is DIRECTORY:
        path.mkdir()
    elif isinstance(content, Raw):
        path.write_text(content, encoding="utf-8")
    elif filename.endswith(".json"):
        path.write_text(json.dumps(content), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path


def load_problems(path: Path) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    problems = info.value.problems
    assert problems, "SpecError without problems"
    return problems


def names_file(source: str, path: Path) -> bool:
    """``source`` is the file, optionally with ``:line:col``."""
    return source == str(path) or re.fullmatch(re.escape(str(path)) + r":\d+:\d+", source) is not None


@pytest.mark.parametrize(
    ("description", "content", "filename", "location", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_spec_is_reported(
    tmp_path: Path, description: str, content: Any, filename: str, location: str, message: str
) -> None:
    path = write_case(tmp_path, content, filename)
    problems = load_problems(path)
    listing = "\n".join(f"{p.source} | {p.location!r} | {p.message}" for p in problems)
    matching = [p for p in problems if p.location == location and message in p.message]
    assert matching, f"{description}: no problem at {location!r} mentioning {message!r}; got:\n{listing}"
    for problem in matching:
        assert names_file(problem.source, path), f"{description}: source {problem.source!r} does not name {path}"


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES), "case descriptions must be unique (they are test ids)"


@pytest.mark.parametrize(
    ("text", "filename"),
    [("name: [1, 2\nvocab_size: 64\n", "spec.yaml"), ('{\n  "vocab_size": 64,\n  "d_model": }\n', "spec.json")],
)
def test_syntax_errors_point_at_line_and_column(tmp_path: Path, text: str, filename: str) -> None:
    path = tmp_path / filename
    path.write_text(text, encoding="utf-8")
    (problem,) = load_problems(path)
    match = re.fullmatch(re.escape(str(path)) + r":(\d+):(\d+)", problem.source)
    assert match, problem.source
    line, col = int(match.group(1)), int(match.group(2))
    assert 1 <= line <= text.count("\n") + 1
    assert col >= 1
    assert problem.location == ""


def test_problem_str_is_one_line_with_file_field_and_message(tmp_path: Path) -> None:
    path = write_case(tmp_path, spec(n_layer=3), "spec.yaml")
    (problem,) = load_problems(path)
    assert str(problem) == f"{path}: n_layer: {problem.message}"
    assert "\n" not in str(problem)


def test_did_you_mean_never_suggests_the_same_name(tmp_path: Path) -> None:
    path = write_case(tmp_path, spec(position={"kind": "alibi", "theta": 10000.0}), "spec.yaml")
    (problem,) = load_problems(path)
    assert problem.location == "position.theta"
    assert "did you mean 'theta'" not in problem.message
    assert "alibi" in problem.message


def test_extends_cycle_between_two_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extends: b.yaml\nname: a\n", encoding="utf-8")
    b.write_text("extends: a.yaml\nname: b\n", encoding="utf-8")
    problems = load_problems(a)
    cycle = [p for p in problems if p.location == "extends" and "cycle" in p.message]
    assert cycle, problems
    assert any(Path(p.source).resolve() in (a.resolve(), b.resolve()) for p in cycle), cycle


def test_file_that_extends_itself(tmp_path: Path) -> None:
    path = tmp_path / "self.yaml"
    path.write_text("extends: self.yaml\n", encoding="utf-8")
    problems = load_problems(path)
    assert any(p.location == "extends" and "cycle" in p.message for p in problems), problems


def test_every_independent_field_problem_is_reported_at_once(tmp_path: Path) -> None:
    bad = spec(d_model="big", n_layers="many", bias="maybe")
    path = write_case(tmp_path, bad, "spec.yaml")
    problems = load_problems(path)
    assert len(problems) == 3, problems
    assert {p.location for p in problems} == {"d_model", "n_layers", "bias"}
    assert all(p.source == str(path) for p in problems)


def test_mixed_field_problems_across_sections_are_all_reported(tmp_path: Path) -> None:
    bad = spec(vocab_size=DROP, attention__n_head=4, ffn__kind="mish", generation={"top_p": 2})
    path = write_case(tmp_path, bad, "spec.json")
    problems = load_problems(path)
    assert {p.location for p in problems} == {"vocab_size", "attention.n_head", "ffn.kind", "generation.top_p"}


def test_every_broken_rule_is_reported_at_once(tmp_path: Path) -> None:
    bad = spec(
        attention__n_heads=5,
        n_encoder_layers=2,
        training={"seq_len": 64},
        generation={"min_new_tokens": 10, "max_new_tokens": 5, "eos_token_ids": [99]},
    )
    path = write_case(tmp_path, bad, "spec.yaml")
    problems = load_problems(path)
    assert {p.location for p in problems} == {
        "attention.n_heads",
        "n_encoder_layers",
        "training.seq_len",
        "generation.min_new_tokens",
        "generation.eos_token_ids.0",
    }
    assert all(p.source == str(path) for p in problems)
    # The error text lists them one per line.
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert len(str(info.value).splitlines()) == len(problems)


def test_the_base_spec_is_valid(tmp_path: Path) -> None:
    # Guards the table: each case must fail because of its change, not because VALID is broken.
    for filename in ("spec.yaml", "spec.json"):
        path = write_case(tmp_path, VALID, filename)
        assert load_spec(path).d_model == 32


def test_a_repeated_yaml_key_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\nvocab_size: 64\nd_model: 32\nvocab_size: 128\n", encoding="utf-8")
    (problem,) = load_problems(path)
    assert problem.source == f"{path}:4:1"
    assert problem.message == "YAML syntax error: duplicate key 'vocab_size'"


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    """`<<: *anchor` followed by one of the anchor's keys is an override YAML allows, not a repeat."""
    path = tmp_path / "spec.yaml"
    text = "extends: tiny\nx-shared: &norm {kind: rmsnorm, eps: 1.0e-5}\nnorm:\n  <<: *norm\n  eps: 1.0e-6\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:  # x-shared is not a spec field; the merge itself parsed
        load_spec(path)
    assert [p.location for p in info.value.problems] == ["x-shared"]
