"""Reading specs: YAML/JSON files, `extends:` presets or files, `--set` overrides, error reports.

Everything that can go wrong is collected as `Problem`s (file + dotted field path + message)
and raised together as one `SpecError`, so a user fixes a file in one pass.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nima.spec.errors import Problem, SpecError
from nima.spec.model import ModelSpec, rule_problems
from nima.spec.presets import PRESETS
from nima.spec.problems import all_field_names, fields_by_kind, problems_from_validation
from nima.spec.strict_json import MAX_SPEC_BYTES, DuplicateKeyError, load_json
from nima.spec.strict_parse import AliasBomb, load_yaml

_MAX_EXTENDS_DEPTH = 8


def load_spec(path: str | Path, overrides: list[str] | None = None) -> ModelSpec:
    """Load, resolve (`extends`, overrides) and validate the spec file at ``path``."""
    path = Path(path)
    data = _read_resolved(path, depth=0, seen=())
    return spec_from_dict(data, source=str(path), overrides=overrides)


def spec_from_dict(data: dict[str, Any], source: str = "<spec>", overrides: list[str] | None = None) -> ModelSpec:
    """Validate an in-memory spec (``extends`` allowed, naming a preset) with optional overrides."""
    data = dict(data)
    if "extends" in data:
        data = _extend(data, base_dir=Path.cwd(), source=source, depth=0, seen=())
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        spec = ModelSpec.model_validate(data, context={"defer_rules": True})
    except ValidationError as err:
        raise SpecError(problems_from_validation(err, data, source)) from None
    problems = [Problem(source, loc, msg) for loc, msg in rule_problems(spec)]
    if problems:
        raise SpecError(problems)
    return spec


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` assignments (values parsed as YAML) to a copy of ``data``."""
    # a copy that keeps shared parts shared: YAML aliases make shared objects, which a JSON round trip
    # would expand (an alias bomb grows exponentially) or fail on (a self-referencing alias)
    data = copy.deepcopy(data)
    problems: list[Problem] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(Problem("--set", item, "expected KEY=VALUE with a dotted field path"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                problems.append(Problem("--set", key, f"{where} is a value, not a section"))
                break
            node = child
        else:
            last = parts[-1]
            if isinstance(value, dict) and isinstance(node.get(last), dict):
                # Merged one level up so that a changed ``kind`` switches the variant, as in extends.
                node[last] = merge({last: node[last]}, {last: value})[last]
            elif last == "kind" and node.get("kind") not in (None, value):
                switched = _switch_variant(node, {"kind": value})
                node.clear()
                node.update(switched)
            else:
                node[last] = value
    if problems:
        raise SpecError(problems)
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into ``base``; a section whose ``kind`` changes is replaced whole."""
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            if "kind" in value and old.get("kind") != value["kind"]:
                out[key] = _switch_variant(old, value)
            else:
                out[key] = merge(old, value)
        else:
            out[key] = value
    return out


def _switch_variant(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Merge for a section whose ``kind`` changes: keep only the old fields the new kind has.

    Switching ``position`` from rope to alibi drops ``theta``; switching ``ffn`` from gelu to
    swiglu keeps ``hidden``, which both kinds have.
    """
    kind = new["kind"]
    allowed = fields_by_kind().get(kind) if isinstance(kind, str) else None
    if allowed is None:  # unknown kind (or no name at all): validation reports the kind alone
        return {**old, **new}
    kept = {k: v for k, v in old.items() if k in allowed and k != "kind"}
    return merge(kept, new)


# --- files ------------------------------------------------------------------------------------


def _read_resolved(path: Path, depth: int, seen: tuple[Path, ...]) -> dict[str, Any]:
    data = read_spec_file(path)
    if "extends" in data:
        data = _extend(data, base_dir=path.parent, source=str(path), depth=depth, seen=(*seen, path.resolve()))
    return data


def read_spec_file(path: Path) -> dict[str, Any]:
    """Parse one YAML or JSON file into a mapping; any failure is a `SpecError` naming the file."""
    source = str(path)
    if not path.exists():
        raise SpecError([Problem(source, "", "file not found")])
    if path.is_dir():
        raise SpecError([Problem(source, "", "is a directory, expected a .yaml or .json spec file")])
    if not path.is_file():  # a FIFO would block the read, /dev/zero never end it
        raise SpecError([Problem(source, "", "is not a regular file, expected a .yaml or .json spec file")])
    if path.stat().st_size > MAX_SPEC_BYTES:
        size = f"{path.stat().st_size:,} bytes"
        raise SpecError([Problem(source, "", f"is {size}; a spec file is at most {MAX_SPEC_BYTES // 2**20} MiB")])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([Problem(source, "", f"cannot read: {err}")]) from None
    try:
        return _parse(text, path, source)
    except RecursionError:
        raise SpecError([Problem(source, "", "nested too deeply to be a spec")]) from None
    except SpecError:  # a syntax error, already naming its place (SpecError is a ValueError)
        raise
    except ValueError as err:  # e.g. an integer past Python's 4,300-digit conversion limit
        raise SpecError([Problem(source, "", f"cannot parse: {str(err).splitlines()[0]}")]) from None


def _parse(text: str, path: Path, source: str) -> dict[str, Any]:
    """``text`` as the mapping a spec file holds; a syntax error is a `SpecError` naming its place."""
    if path.suffix.lower() == ".json":
        try:
            data = load_json(text)
        except json.JSONDecodeError as err:
            raise SpecError(
                [Problem(f"{source}:{err.lineno}:{err.colno}", "", f"JSON syntax error: {err.msg}")]
            ) from None
        except DuplicateKeyError as err:
            raise SpecError([Problem(source, "", f"JSON error: {err}")]) from None
    else:
        try:
            data = load_yaml(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
            what = getattr(err, "problem", None) or str(err).splitlines()[0]
            label = "YAML error" if isinstance(err, AliasBomb) else "YAML syntax error"
            raise SpecError([Problem(where, "", f"{label}: {what}")]) from None
    if data is None:
        raise SpecError([Problem(source, "", "is empty")])
    if not isinstance(data, dict):
        raise SpecError([Problem(source, "", f"top level must be a mapping of fields, got {type(data).__name__}")])
    return data


def _extend(data: dict[str, Any], base_dir: Path, source: str, depth: int, seen: tuple[Path, ...]) -> dict[str, Any]:
    data = dict(data)
    parent = data.pop("extends")
    if not isinstance(parent, str):
        raise SpecError([Problem(source, "extends", "must be a preset name or a path to a spec file")])
    if parent in PRESETS:
        base = PRESETS[parent]
    else:
        try:
            parent_path = (base_dir / parent).resolve()
            found = parent_path.exists()
        except (OSError, ValueError) as err:  # a NUL byte, a name past the system's limit
            why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise SpecError([Problem(source, "extends", f"not a usable path ({why})")]) from None
        if not found:
            names = ", ".join(PRESETS)
            raise SpecError(
                [Problem(source, "extends", f"{parent!r} is neither a preset ({names}) nor an existing file")]
            )
        if parent_path in seen or depth >= _MAX_EXTENDS_DEPTH:
            raise SpecError([Problem(source, "extends", f"{parent!r} extends itself (a cycle)")])
        if not parent_path.is_file():
            raise SpecError([Problem(source, "extends", f"{parent!r} is not a regular file")])
        base = _read_resolved(parent_path, depth + 1, seen)  # its syntax errors name places, not contents
        unknown = _unknown_keys(base, set(all_field_names()))
        if unknown:
            raise SpecError(
                [
                    Problem(
                        source,
                        "extends",
                        f"{parent!r} is not a spec file: {unknown} of its keys are no spec field's (not shown)",
                    )
                ]
            )
    return merge(base, data)


def _unknown_keys(data: Any, names: set[str], seen: set[int] | None = None) -> int:
    """How many keys in ``data``, at any depth, no spec section has (``names``): a file that is not a spec.
    A part met twice (a YAML alias) is counted once, so an alias bomb costs its size on disk, not more."""
    seen = set() if seen is None else seen
    if not isinstance(data, list | dict) or id(data) in seen:
        return 0
    seen.add(id(data))
    if isinstance(data, list):
        return sum(_unknown_keys(item, names, seen) for item in data)
    return sum((key not in names) + _unknown_keys(value, names, seen) for key, value in data.items())


def load_resolved_spec(path: Path) -> ModelSpec:
    """The resolved spec of a model folder, run or bundle (``nima.json``), which extends nothing: one that
    does is refused, so no folder's spec reads a file outside it (a FIFO there would hang the reader)."""
    data = read_spec_file(path)
    if "extends" in data:
        raise SpecError(
            [Problem(str(path), "extends", "a resolved spec (a model folder's, run's or bundle's) extends nothing")]
        )
    return spec_from_dict(data, source=str(path))
