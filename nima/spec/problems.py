"""Pydantic's validation errors as one `Problem` each: a dotted field path without the union tags Pydantic
inserts, and a message a user acts on (did-you-mean hints, unknown kinds, fields of another variant).

Also what the loader asks of the schema itself: every field name, and the fields each ``kind`` takes.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from nima.spec.errors import Problem
from nima.spec.model import ModelSpec
from nima.spec.variants import ONE_OR_CYCLE_TAGS

MAX_PROBLEMS = 50  # a file with thousands of mistakes is reported by its first ones, fast


def problems_from_validation(err: ValidationError, data: dict[str, Any], source: str) -> list[Problem]:
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
            if tag == item or (tag is None and item in fields_by_kind()):
                continue  # a discriminated-union tag, not a field (the default variant's, where kind is left out)
        if isinstance(item, str) and (item.startswith("function-") or item in ONE_OR_CYCLE_TAGS):
            continue  # a wrapper's step, not a field: a validator function, or one pattern / a cycle of them
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
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):  # the latter: a dataclass section's
        field = loc.rsplit(".", 1)[-1]
        names = all_field_names()
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
    model: type = ModelSpec
    node = data
    for part in parts:
        annotation = _fields_of(model).get(part)
        node = node.get(part) if isinstance(node, dict) else None
        if annotation is None:
            return None
        candidates = _models_in(annotation)
        if len(candidates) > 1 and isinstance(node, dict):
            if "kind" in node:
                candidates = [m for m in candidates if node["kind"] in _kinds(m)]
            else:  # the family's default variant (`nima.spec.base.default_kind`)
                candidates = [m for m in candidates if m.model_fields["kind"].default in _kinds(m)]
        if len(candidates) != 1:
            return None
        model = candidates[0]
    return sorted(_fields_of(model))


def _fields_of(section: type) -> dict[str, Any]:
    """Field name -> annotation of a spec section: a Pydantic model, or a dataclass (`GenerationSpec`)."""
    if isinstance(section, type) and issubclass(section, BaseModel):
        return {name: field.annotation for name, field in section.model_fields.items()}
    hints = typing.get_type_hints(section, include_extras=True)
    return {field.name: hints[field.name] for field in dataclasses.fields(section)}


def _kinds(model: type) -> tuple[Any, ...]:
    """The ``kind`` values that select ``model`` in its union (none if it is not a variant)."""
    kind = _fields_of(model).get("kind")
    return getattr(kind, "__args__", ()) if kind is not None else ()


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
def _spec_models() -> list[type]:
    """Every section class (model or dataclass) reachable from `ModelSpec`."""
    todo: list[type] = [ModelSpec]
    done: list[type] = []
    while todo:
        model = todo.pop()
        if model in done:
            continue
        done.append(model)
        for annotation in _fields_of(model).values():
            todo.extend(_models_in(annotation))
    return done


@functools.cache
def all_field_names() -> list[str]:
    """Every field name of every spec section, for did-you-mean hints."""
    return sorted({name for model in _spec_models() for name in _fields_of(model)})


@functools.cache
def fields_by_kind() -> dict[str, set[str]]:
    """For each ``kind`` value of any variant family, the fields that variant accepts."""
    table: dict[str, set[str]] = {}
    for model in _spec_models():
        kind = _fields_of(model).get("kind")
        if kind is None:
            continue
        for value in getattr(kind, "__args__", ()):
            table[value] = set(_fields_of(model))
    return table


def _models_in(annotation: Any) -> list[type]:
    """The section classes (models, dataclasses) an annotation names, through unions and ``Annotated``."""
    if isinstance(annotation, type) and (issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)):
        return [annotation]
    found: list[type] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    meta = getattr(annotation, "__metadata__", None)
    if meta is not None:
        found.extend(_models_in(annotation.__origin__))
    return found
