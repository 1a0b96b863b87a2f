"""JSON parsing that refuses a key given twice in one object.

The json module keeps the last of two equal keys without a word, so a spec that sets `d_model`
twice would silently build the second value. Apart from `nima.spec.strict_parse` (YAML) so that
the runtime reads a bundle's ``nima.json`` without importing PyYAML.
"""

from __future__ import annotations

import json
from typing import Any

MAX_SPEC_BYTES = 2**20  # a spec is a page of YAML; anything near this size is not one (nor its JSON)


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
