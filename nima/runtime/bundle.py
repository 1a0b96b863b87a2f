"""Reading an export bundle: the resolved spec, the graph's path and the tokenizer, checked on load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from nima.runtime.errors import GenerateError
from nima.runtime.names import MODEL_FILE, SPEC_FILE, TOKENIZER_FILE
from nima.spec import ModelSpec, SpecError, load_spec


@dataclass(frozen=True)
class Bundle:
    """What the runtime needs from a bundle folder."""

    path: Path
    spec: ModelSpec
    model: Path
    tokenizer: Tokenizer | None


def read_bundle(path: str | Path) -> Bundle:
    """Load ``path`` (a folder written by ``nima export``); `GenerateError` naming the bad file."""
    folder = Path(path)
    if not folder.is_dir():
        raise GenerateError(f"{folder}: no such bundle folder")
    spec_path, model = folder / SPEC_FILE, folder / MODEL_FILE
    if not spec_path.is_file():
        raise GenerateError(f"{folder}: no {SPEC_FILE} here (expected a folder written by nima export)")
    try:
        spec = load_spec(spec_path)
    except SpecError as err:
        raise GenerateError(str(err).splitlines()[0]) from None
    if spec.architecture != "decoder":
        raise GenerateError(f"{spec_path}: architecture {spec.architecture!r}: the runtime serves decoder bundles")
    if not model.is_file():
        raise GenerateError(f"{model}: graph file not found")
    tokenizer = None
    tokenizer_path = folder / TOKENIZER_FILE
    if tokenizer_path.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as err:  # tokenizers raises a bare Exception for unreadable files
            raise GenerateError(f"{tokenizer_path}: not a readable tokenizer ({err})") from None
    return Bundle(folder, spec, model, tokenizer)
