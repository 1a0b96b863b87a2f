"""What the runtime reads of a bundle's resolved spec (``nima.json``): sizes, architecture and the
generation defaults, without Pydantic.

``nima export`` wrote the file from a validated spec, so the runtime checks only what it uses:
each figure it reads is a positive integer, the architecture one it runs, the generation section
`GenerationSpec`'s table (`check_generation`). Loading the spec's Pydantic models instead would cost
every process that decodes about 0.07 s and 12 MiB before its first token; `Bundle.model_spec` loads
them where a caller needs the whole spec (the server's cache moves read the position scheme).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nima.runtime.errors import GenerateError
from nima.runtime.families import FAMILIES
from nima.spec.generation import GenerationSpec, OptionError, check_generation
from nima.spec.strict_json import MAX_SPEC_BYTES, load_json


@dataclass(frozen=True)
class BundleSpec:
    """The resolved spec's figures the runtime uses; the derived ones resolved as `ModelSpec`'s properties."""

    architecture: str
    vocab_size: int
    max_seq_len: int
    d_model: int
    n_layers: int  # decoder blocks: the decoder's cache holds one past per block
    n_kv_heads: int
    head_dim: int
    generation: GenerationSpec


def read_bundle_spec(path: Path) -> BundleSpec:
    """``path`` (a bundle's ``nima.json``) as a `BundleSpec`; `GenerateError` naming the file and field."""
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise GenerateError(f"{path}: {path.stat().st_size:,} bytes; a spec is at most {MAX_SPEC_BYTES // 2**20} MiB")
    try:
        data = load_json(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise GenerateError(f"{path}: not a readable spec (nested too deeply)") from None
    except (OSError, ValueError) as err:  # bad JSON or UTF-8, a repeated key, an integer of 4,300 digits
        raise GenerateError(f"{path}: not a readable spec ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise GenerateError(f"{path}: not a spec (a JSON object of fields)")
    if "extends" in data:  # as `nima.spec.load_resolved_spec`: nothing outside the bundle is read
        raise GenerateError(f"{path}: extends: a resolved spec (a model folder's, run's or bundle's) extends nothing")
    architecture = data.get("architecture", "decoder")
    if not isinstance(architecture, str) or architecture not in FAMILIES:
        raise GenerateError(f"{path}: architecture: {architecture!r} is not one of {', '.join(FAMILIES)}")
    attention = data.get("attention")
    if not isinstance(attention, dict):
        raise GenerateError(f"{path}: attention: missing, or not a section")
    d_model = _count(path, data, "d_model")
    n_heads = _count(path, attention, "n_heads", "attention.")
    n_kv_heads = _count(path, attention, "n_kv_heads", "attention.", default=n_heads)
    head_dim = _count(path, attention, "head_dim", "attention.", default=d_model // n_heads)
    generation = data.get("generation", {})
    if not isinstance(generation, dict):
        raise GenerateError(f"{path}: generation: not a section")
    try:
        defaults = check_generation(generation)
    except OptionError as err:
        raise GenerateError(f"{path}: generation.{err.field}: {err.message} (got {err.value!r})") from None
    return BundleSpec(
        architecture=architecture,
        vocab_size=_count(path, data, "vocab_size"),
        max_seq_len=_count(path, data, "max_seq_len"),
        d_model=d_model,
        n_layers=_count(path, data, "n_layers"),
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        generation=defaults,
    )


def _count(path: Path, section: dict[str, Any], name: str, prefix: str = "", default: int | None = None) -> int:
    """``section[name]``, a positive integer (``default`` where missing or null and one is given)."""
    value = section.get(name)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        said = "missing" if name not in section else f"{value!r} is not a positive integer"
        raise GenerateError(f"{path}: {prefix}{name}: {said}")
    return value
