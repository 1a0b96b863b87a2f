"""Reading specs: YAML/JSON files, `extends:` presets or files, `--set` overrides, error reports.

Everything that can go wrong is collected as `Problem`s (file + dotted field path + message)
and raised together as one `SpecError`, so a user fixes a file in one pass.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nima.spec.errors import Problem, SpecError
from nima.spec.model import ModelSpec, rule_problems
from nima.spec.presets import PRESETS
from nima.spec.strict_parse import DuplicateKeyError, load_json, load_yaml

_MAX_EXTENDS_DEPTH = 8
MAX_SPEC_BYTES = 2**20  # a spec is a page of YAML; anything near this size is not one


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
        raise SpecError(_problems_from_validation(err, data, source)) from None
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
    allowed = _fields_by_kind().get(kind) if isinstance(kind, str) else None
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
            raise SpecError([Problem(where, "", f"YAML syntax error: {what}")]) from None
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
        unknown = _unknown_keys(base, set(_all_field_names()))
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


# --- turning Pydantic errors into one line each ---------------------------------------------------


MAX_PROBLEMS = 50  # a file with thousands of mistakes is reported by its first ones, fast


def _problems_from_validation(err: ValidationError, data: dict[str, Any], source: str) -> list[Problem]:
    problems = []
    errors = err.errors(include_url=False)
    if len(errors) > MAX_PROBLEMS:
        more = len(errors) - MAX_PROBLEMS
        errors = errors[:MAX_PROBLEMS]
        problems.append(Problem(source, "", f"{more} more problems after the {MAX_PROBLEMS} below; fix those first"))
    for e in errors:
        loc = _clean_location(e["loc"], data)
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # The problem is the section's ``kind`` field, not the section as a whole.
            tag = str(e.get("ctx", {}).get("discriminator", "kind")).strip("'")
            loc = f"{loc}.{tag}" if loc else tag
        problems.append(Problem(source, loc, _message(e, loc, data)))
    return problems


def _clean_location(loc: tuple[Any, ...], data: Any) -> str:
    """Dotted path of ``loc`` without the union tags Pydantic inserts (``position.rope.theta``)."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(node, dict) and item not in node:
            tag = node.get("kind")
            if tag == item or (tag is None and item in _fields_by_kind()):
                continue  # a discriminated-union tag, not a field (the default variant's, where kind is left out)
        if isinstance(item, str) and item.startswith("function-"):
            continue
        parts.append(str(item))
        if isinstance(node, dict):
            node = node.get(item)
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            node = node[item]
        else:
            node = None
    return ".".join(parts)


def _message(e: dict[str, Any], loc: str, data: Any = None) -> str:
    kind = e["type"]
    if kind == "extra_forbidden":
        field = loc.rsplit(".", 1)[-1]
        names = _all_field_names()
        if field in names:  # a real field, but of another section or variant
            parent = _node_at(data, loc.split(".")[:-1])
            owner = parent.get("kind") if isinstance(parent, dict) else None
            if owner:
                return f"unknown field (kind {owner!r} has no {field!r})"
            return f"unknown field ({field!r} belongs to another section)"
        close = _closest(field, _section_fields(loc.split(".")[:-1], data) or names)
        hint = f" (did you mean {close!r}?)" if close else ""
        return f"unknown field{hint}"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        ctx = e.get("ctx", {})
        return f"unknown kind {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "required field is missing (it selects the variant)"
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    value = e.get("input")
    if not isinstance(value, (dict, list)) and kind not in ("union_tag_invalid", "union_tag_not_found"):
        msg = f"{msg[0].lower()}{msg[1:]} (got {value!r})"
    return msg


def _closest(field: str, names: list[str]) -> str | None:
    """The name ``field`` most likely misspells: a close spelling, else the one name that contains
    it as a word (``steps`` -> ``max_steps``); None when nothing is close."""
    close = difflib.get_close_matches(field, names, n=1, cutoff=0.7)
    if close:
        return close[0]
    containing = [n for n in names if field in n.split("_") or n in field.split("_")]
    return containing[0] if len(containing) == 1 else None


def _section_fields(parts: list[str], data: Any) -> list[str] | None:
    """The field names of the section at ``parts`` (a variant chosen by the data's ``kind``), or None
    when the path does not lead to one section: suggestions then come from every section."""
    model: type[BaseModel] = ModelSpec
    node = data
    for part in parts:
        field = model.model_fields.get(part)
        node = node.get(part) if isinstance(node, dict) else None
        if field is None:
            return None
        candidates = _models_in(field.annotation)
        if len(candidates) > 1 and isinstance(node, dict):
            if "kind" in node:
                candidates = [m for m in candidates if node["kind"] in _kinds(m)]
            else:  # the family's default variant (`nima.spec.variants.default_kind`)
                candidates = [m for m in candidates if m.model_fields["kind"].default in _kinds(m)]
        if len(candidates) != 1:
            return None
        model = candidates[0]
    return sorted(model.model_fields)


def _kinds(model: type[BaseModel]) -> tuple[Any, ...]:
    """The ``kind`` values that select ``model`` in its union (none if it is not a variant)."""
    kind = model.model_fields.get("kind")
    return getattr(kind.annotation, "__args__", ()) if kind is not None else ()


def _node_at(data: Any, parts: list[str]) -> Any:
    """The value at a cleaned dotted path in the raw spec data, or None."""
    node = data
    for part in parts:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


@functools.cache
def _spec_models() -> list[type[BaseModel]]:
    """Every model class reachable from `ModelSpec`."""
    todo: list[type[BaseModel]] = [ModelSpec]
    done: list[type[BaseModel]] = []
    while todo:
        model = todo.pop()
        if model in done:
            continue
        done.append(model)
        for field in model.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return done


@functools.cache
def _all_field_names() -> list[str]:
    """Every field name of every spec section, for did-you-mean hints."""
    return sorted({name for model in _spec_models() for name in model.model_fields})


@functools.cache
def _fields_by_kind() -> dict[str, set[str]]:
    """For each ``kind`` value of any variant family, the fields that variant accepts."""
    table: dict[str, set[str]] = {}
    for model in _spec_models():
        kind = model.model_fields.get("kind")
        if kind is None:
            continue
        for value in getattr(kind.annotation, "__args__", ()):
            table[value] = set(model.model_fields)
    return table


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    meta = getattr(annotation, "__metadata__", None)
    if meta is not None:
        found.extend(_models_in(annotation.__origin__))
    return found
