"""YAML and JSON parsing that refuses a key given twice in one mapping.

PyYAML and the json module keep the last of two equal keys without a word, so a spec that sets
`d_model` twice (an edit that added a line instead of changing one) would silently build the
second value. Here the second occurrence is an error naming its line (YAML) or the key (JSON).
"""

from __future__ import annotations

import json
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


def load_yaml(text: str) -> Any:
    """Parse YAML like `yaml.safe_load`, raising a `yaml.YAMLError` (with `problem_mark`) on a repeated key."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


class DuplicateKeyError(ValueError):
    """A JSON object that names one key twice."""


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_json(text: str) -> Any:
    """Parse JSON like `json.loads`, raising `DuplicateKeyError` on a repeated key in one object."""
    return json.loads(text, object_pairs_hook=_no_repeats)
