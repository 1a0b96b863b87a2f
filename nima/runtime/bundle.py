"""Reading an export bundle: the resolved spec, the manifest, the graphs' paths and the tokenizer, checked on load."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from nima.layout import MANIFEST_FILE, SPEC_FILE, TOKENIZER_FILE, WEIGHTS_FILE, TokenIds
from nima.manifest import Manifest, ManifestError, read_manifest, with_token_ids
from nima.runtime.bundle_spec import BundleSpec, read_bundle_spec
from nima.runtime.errors import GenerateError
from nima.runtime.families import FAMILIES

if TYPE_CHECKING:
    from nima.spec import ModelSpec


@dataclass(frozen=True)
class Bundle:
    """What the runtime needs from a bundle folder."""

    path: Path
    spec: BundleSpec  # what decoding reads of nima.json; `model_spec` for the whole spec
    manifest: Manifest  # token ids filled in from the tokenizer where the manifest leaves them unset
    graphs: dict[str, Path]  # role ("decoder", "encoder") -> graph file, each checked to exist
    tokenizer: Tokenizer | None

    @property
    def model(self) -> Path:
        """The decoder graph, which every family has."""
        return self.graphs["decoder"]

    @property
    def token_ids(self) -> TokenIds:
        return self.manifest.token_ids

    @property
    def share_buffer(self) -> bool:
        """The decoder graph takes one KV buffer as past and present (`SharedBufferSession`)."""
        return self.manifest.share_buffer

    @cached_property
    def model_spec(self) -> ModelSpec:
        """The whole resolved spec, validated by its Pydantic models (loaded on first use: decoding
        needs only `spec`)."""
        from nima.spec import SpecError, load_resolved_spec

        try:
            return load_resolved_spec(self.path / SPEC_FILE)
        except SpecError as err:
            raise GenerateError(str(err).splitlines()[0]) from None


def read_bundle(path: str | Path) -> Bundle:
    """Load ``path`` (a folder written by ``nima export``); `GenerateError` naming the bad file."""
    try:
        return _read_bundle(Path(path))
    except OSError as err:  # a folder that can be listed but not entered, a file that cannot be read
        raise GenerateError(f"{err.filename or path}: cannot read it ({err.strerror or err})") from None


# sizes bundle.json records for the graph (``io``) and the nima.json field each must equal
RECORDED = (
    ("context_length", "max_seq_len"),
    ("vocab_size", "vocab_size"),
    ("hidden_size", "d_model"),
    ("num_key_value_heads", "n_kv_heads"),
    ("head_size", "head_dim"),
)


def _read_bundle(folder: Path) -> Bundle:
    if not folder.is_dir():
        if not folder.exists():
            raise GenerateError(f"{folder}: no such bundle folder")
        if folder.suffix.lower() in (".yaml", ".yml", ".json"):
            raise GenerateError(
                f"{folder}: a spec file, not a bundle; export a model first: nima export --onnx MODEL_FOLDER -o BUNDLE"
            )
        raise GenerateError(f"{folder}: is a file, not a bundle folder")
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise GenerateError(f"{folder}: no {SPEC_FILE} here (expected a folder written by nima export)")
    if (folder / WEIGHTS_FILE).is_file() and not (folder / MANIFEST_FILE).exists() and not any(folder.glob("*.onnx")):
        raise GenerateError(
            f"{folder}: a model folder (weights, no ONNX graph), not a bundle; export it first: "
            f"nima export --onnx {shlex.quote(str(folder))} -o {shlex.quote(str(folder) + '-bundle')}"
        )
    spec = read_bundle_spec(spec_path)
    try:
        manifest = read_manifest(folder, spec.architecture)
    except ManifestError as err:
        raise GenerateError(str(err)) from None
    for key, name in RECORDED:  # an edited nima.json would fail only inside ONNX Runtime, mid-generation
        recorded = manifest.io.get(key)
        if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded != getattr(spec, name):
            raise GenerateError(
                f"{spec_path}: {name} is {getattr(spec, name)}, but {MANIFEST_FILE} records {key} {recorded} "
                "for the graph: the two files do not belong together"
            )
    graphs = {}
    for role in FAMILIES[spec.architecture].roles:
        if role not in manifest.graphs:
            raise GenerateError(f"{folder / MANIFEST_FILE}: names no {role} graph")
        graphs[role] = folder / manifest.graphs[role]
        if not graphs[role].is_file():
            raise GenerateError(f"{graphs[role]}: graph file not found")
    tokenizer = None
    tokenizer_path = folder / TOKENIZER_FILE
    if os.path.lexists(tokenizer_path) and not tokenizer_path.is_file():  # not "no tokenizer": a broken one
        raise GenerateError(f"{tokenizer_path}: not a regular file")
    if tokenizer_path.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as err:  # tokenizers raises a bare Exception for unreadable files
            raise GenerateError(f"{tokenizer_path}: not a readable tokenizer ({err})") from None
    bad = manifest.token_ids.outside(spec.vocab_size)  # the tokenizer's own ids are its business
    if bad is not None:
        where = folder / MANIFEST_FILE if (folder / MANIFEST_FILE).exists() else folder
        raise GenerateError(f"{where}: {bad[0]} {bad[1]} is outside the vocabulary (0..{spec.vocab_size - 1})")
    manifest = with_token_ids(manifest, TokenIds.from_tokenizer(tokenizer))
    return Bundle(folder, spec, manifest, graphs, tokenizer)
