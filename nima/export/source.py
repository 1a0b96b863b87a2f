"""What `nima export` reads: a model folder (from `nima build` or `nima train`) or a spec file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nima.builders import build_model, load_weights
from nima.builders.models import DecoderLM, EncoderDecoderLM
from nima.export.errors import SourceError
from nima.layout import SPEC_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from nima.spec import ModelSpec, load_resolved_spec, load_spec


@dataclass
class ExportSource:
    spec: ModelSpec
    model: DecoderLM | EncoderDecoderLM
    tokenizer: Path | None
    random_weights: bool
    folder: Path | None = None  # the model folder it came from (None: a spec file)


def load_source(path: Path, overrides: list[str] | None = None) -> ExportSource:
    """Load the spec, weights and tokenizer from ``path``; a spec file gets seeded random weights."""
    if not path.exists():
        raise SourceError(f"{path}: not found")
    if path.is_file():
        spec = load_spec(path, overrides)
        return ExportSource(spec, build_model(spec, seed=spec.training.seed), None, random_weights=True)
    spec_path, weights = path / SPEC_FILE, path / WEIGHTS_FILE
    if not spec_path.is_file():
        raise SourceError(f"{path}: no {SPEC_FILE} here (expected a folder written by nima build or nima train)")
    if not weights.is_file():
        raise SourceError(f"{weights}: {'is not a file' if weights.exists() else 'weights file not found'}")
    if overrides:
        raise SourceError("--set applies to spec files only; a model folder's spec must match its weights")
    tokenizer = path / TOKENIZER_FILE
    if tokenizer.exists():
        _check_tokenizer(tokenizer)
    spec = load_resolved_spec(spec_path)
    model = build_model(spec)
    load_weights(model, weights)
    return ExportSource(spec, model, tokenizer if tokenizer.exists() else None, random_weights=False, folder=path)


def _check_tokenizer(path: Path) -> None:
    """A source's tokenizer.json must load: the bundle ships it, and generation decodes with it."""
    from tokenizers import Tokenizer

    if not path.is_file():
        raise SourceError(f"{path}: is not a file")
    try:
        Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception for malformed files
        raise SourceError(f"{path}: not a readable tokenizer.json ({str(err).splitlines()[0]})") from None
