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


def load_yaml(text: str) -> Any:
    """Parse YAML like `yaml.safe_load`, raising a `yaml.YAMLError` (with `problem_mark`) on a repeated key."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
