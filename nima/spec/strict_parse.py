"""YAML parsing that refuses a key given twice in one mapping (JSON's: `nima.spec.strict_json`).

PyYAML keeps the last of two equal keys without a word, so a spec that sets `d_model` twice (an
edit that added a line instead of changing one) would silently build the second value. Here the
second occurrence is an error naming its line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` whose mappings refuse repeated keys (`<<:` merges may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                except TypeError:  # an unhashable key; SafeLoader reports it below
                    continue
                if repeated:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_yaml_map)


MAX_VALUES = 100_000  # values a document may hold with its aliases expanded; a spec has hundreds


class AliasBomb(yaml.YAMLError):
    """A document whose aliases expand to more than `MAX_VALUES` values ("billion laughs")."""


def load_yaml(text: str) -> Any:
    """Parse YAML like `yaml.safe_load`, raising a `yaml.YAMLError` (with `problem_mark`) on a repeated key,
    and `AliasBomb` where aliases would expand past `MAX_VALUES` values. PyYAML shares an aliased value
    rather than copying it, so nine nested levels of ten aliases parse in a moment; but every reader that
    walks the result (validation, and its error message, which tried to print 5.6 GB) sees 10**9 values."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values = _expanded(node, {})
        if values > MAX_VALUES:
            raise AliasBomb(f"its aliases expand to {values:,} values; a spec holds at most {MAX_VALUES:,}")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded(node: yaml.Node, counted: dict[int, int]) -> int:
    """How many values ``node`` holds with every alias expanded (a node reached twice counts twice)."""
    key = id(node)
    if key in counted:
        return counted[key]
    counted[key] = 1  # a node that contains itself (a recursive alias): counted once
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded(child, counted) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded(k, counted) + _expanded(v, counted) for k, v in node.value)
    else:
        total = 1
    counted[key] = total
    return total
