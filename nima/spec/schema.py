"""The JSON Schema that editors use to complete and check spec files.

It is Pydantic's schema of `ModelSpec`, adjusted for how spec files are written: a file may
``extends:`` a preset or another file, and then any field may be omitted, so fields are only
required when there is no ``extends`` (sections keep just their ``kind`` tags required).
`load_spec` still checks everything when the file is loaded.
"""

from __future__ import annotations

from typing import Any

from nima import __version__
from nima.spec.model import ModelSpec
from nima.spec.presets import PRESETS

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def spec_json_schema() -> dict[str, Any]:
    schema = ModelSpec.model_json_schema(mode="validation")
    required = schema.pop("required", [])
    for definition in schema.get("$defs", {}).values():
        kept = [name for name in definition.get("required", []) if name == "kind"]
        if kept:
            definition["required"] = kept
        else:
            definition.pop("required", None)
    schema["properties"]["extends"] = {
        "type": "string",
        "description": f"A preset ({', '.join(PRESETS)}) or a path to a spec file that this one overrides.",
        "examples": list(PRESETS),
    }
    schema["if"] = {"not": {"required": ["extends"]}}
    schema["then"] = {"required": required}
    _one_line_descriptions(schema)
    schema["$schema"] = SCHEMA_DIALECT
    schema["title"] = f"Nima model spec (nima {__version__})"
    return schema


def _one_line_descriptions(schema: dict[str, Any]) -> None:
    """Field descriptions as one line each: attribute docstrings (`GenerationSpec`'s) keep their line
    breaks, which editors show as typed. Section descriptions (class docstrings) keep their paragraphs."""
    for section in (schema, *schema.get("$defs", {}).values()):
        for field in section.get("properties", {}).values():
            if isinstance(field.get("description"), str):
                field["description"] = " ".join(field["description"].split())
