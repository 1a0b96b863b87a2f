"""`Strict`, the base of every spec section, and `default_kind` for variant unions with a default.

Kept apart from the variant families (`nima.spec.variants`) and the plain sections
(`nima.spec.sections`) because both build on it.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator


def _accepts(annotation: Any, kind: type) -> bool:
    """Whether a field annotated ``annotation`` takes values of ``kind`` (``int | None`` takes ints)."""
    if annotation is kind:
        return True
    if typing.get_origin(annotation) is Annotated:
        return _accepts(typing.get_args(annotation)[0], kind)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_accepts(arg, kind) for arg in typing.get_args(annotation))
    return False


class _Mixup:
    """A boolean given for a number, or a number for a boolean: fails the field's own type check,
    so the error names the field and every other problem is still reported."""

    def __init__(self, value: bool | int | float) -> None:
        self.value = value

    def __repr__(self) -> str:
        return str(self.value).lower() if isinstance(self.value, bool) else repr(self.value)


class Strict(BaseModel):
    """Base for every spec section: unknown fields are errors, assignments are re-validated.

    Pydantic's lax mode is kept (YAML reads ``lr: 1e-3`` as a string), except between booleans
    and numbers: ``n_layers: true`` or ``tie_embeddings: 1`` is a mistake, not a 1 or a True.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    # A variant's smallest valid fields besides ``kind`` (`variant_examples`); empty where every field
    # has a default or depends on the model's sizes (an FFN's hidden width).
    example: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _no_bool_number_mixups(cls, data: Any) -> Any:
        return no_bool_number_mixups(data, {name: field.annotation for name, field in cls.model_fields.items()})


def no_bool_number_mixups(data: Any, annotations: dict[str, Any]) -> Any:
    """``data`` (a section's fields) with each boolean given for a number, or number for a boolean,
    wrapped so the field's own type check fails (`_Mixup`); ``annotations``: field name -> type."""
    if not isinstance(data, dict):
        return data
    fixed = dict(data)
    for name, value in data.items():
        annotation = annotations.get(name) if isinstance(name, str) else None
        if annotation is None:
            continue  # unknown fields get pydantic's own errors
        item = _list_item(annotation)
        if item is not None and isinstance(value, list):  # a list of token ids: each item by the same rule
            fixed[name] = [_Mixup(v) if _mixed_up(item, v) else v for v in value]
        elif _mixed_up(annotation, value):
            fixed[name] = _Mixup(value)
    return fixed


def _mixed_up(annotation: Any, value: Any) -> bool:
    """A boolean for a field that takes numbers but no booleans, or a number for one that takes only booleans."""
    if not isinstance(value, int | float):
        return False  # other types get pydantic's own errors
    takes_bool = _accepts(annotation, bool)
    takes_number = _accepts(annotation, int) or _accepts(annotation, float)
    is_bool = isinstance(value, bool)
    return (is_bool and takes_number and not takes_bool) or (not is_bool and takes_bool and not takes_number)


def _list_item(annotation: Any) -> Any:
    """The item type of a ``list[...]`` annotation (through ``Annotated``), else None."""
    if typing.get_origin(annotation) is Annotated:
        return _list_item(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    return None


def default_kind(kind: str) -> BeforeValidator:
    """Fill in ``kind`` where a section leaves it out, so ``ffn: {hidden: 1024}`` is the default variant."""

    def fill(value: Any) -> Any:
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": kind, **value}
        return value

    return BeforeValidator(fill)
