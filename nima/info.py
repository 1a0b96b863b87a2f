"""What a path holds, for `nima info`: a spec file, a model folder, a training run, a bundle, or a
Hugging Face folder — what it is, its sizes and figures, its files, and how it was made or checked.

Torch-free and read-only: it reads the JSON files, the safetensors header (not the weights) and the
tail of ``metrics.jsonl``, so it answers in a fraction of a second on a deployment install, as
``gguf-dump`` or ``optimum-cli env`` do for their users.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nima.layout import (
    CHECKPOINTS_DIR,
    MANIFEST_FILE,
    METRICS_FILE,
    RUN_FILE,
    SPEC_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
)
from nima.manifest import ManifestError, read_manifest
from nima.spec import ModelSpec, SpecError, figures, load_resolved_spec, load_spec
from nima.summary import describe, figure_rows, size

MAX_HEADER = 100 * 2**20  # a safetensors header past this is not one Nima wrote
METRICS_TAIL = 64 * 1024  # the last lines of metrics.jsonl hold the latest losses


class InfoError(ValueError):
    """The path holds nothing `nima info` knows; the message names it and says what was expected."""


@dataclass
class Info:
    """What `describe_path` found: the kind, (label, value) rows, the files with their sizes."""

    path: Path
    kind: str  # "spec", "model", "run", "bundle", "hugging face folder"
    rows: list[tuple[str, str]] = field(default_factory=list)
    files: list[tuple[str, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "rows": dict(self.rows),
            "files": {name: n for name, n in self.files},
        }


def describe_path(path: Path) -> Info:
    """Look at ``path`` and say what it is; `InfoError` when it is none of the kinds above."""
    if not path.exists():
        raise InfoError(f"{path}: no such file or folder")
    if path.is_file():
        return _spec_file(path)
    if not path.is_dir():
        raise InfoError(f"{path}: not a regular file or a folder")
    if (path / SPEC_FILE).is_file():
        if (path / MANIFEST_FILE).is_file() or any(path.glob("*.onnx")):
            return _bundle(path)
        return _model(path)
    if (path / "config.json").is_file():
        return _hugging_face(path)
    raise InfoError(f"{path}: no {SPEC_FILE} or config.json here (expected a spec, a model, a run or a bundle)")


def _spec_file(path: Path) -> Info:
    try:
        spec = load_spec(path)
    except SpecError as err:
        raise InfoError(str(err).splitlines()[0]) from None
    info = Info(path, "spec", _spec_rows(spec))
    info.rows.append(("next", f"nima build {path} -o MODEL_FOLDER, or nima train {path} --data TEXT"))
    return info


def _spec_rows(spec: ModelSpec) -> list[tuple[str, str]]:
    return [*describe(spec), *figure_rows(spec, figures(spec))]


def _resolved(folder: Path) -> ModelSpec:
    try:
        return load_resolved_spec(folder / SPEC_FILE)
    except SpecError as err:
        raise InfoError(str(err).splitlines()[0]) from None


def _model(folder: Path) -> Info:
    spec = _resolved(folder)
    run = (folder / RUN_FILE).is_file()
    info = Info(folder, "run" if run else "model", _spec_rows(spec), _files(folder))
    readable = _weights(info, folder / WEIGHTS_FILE)
    info.rows += _tokenizer_rows(folder / TOKENIZER_FILE)
    if run:
        info.rows += _run_rows(folder)
    if readable:  # unreadable weights: no export to suggest
        info.rows.append(("next", f"nima export --onnx {folder} -o BUNDLE"))
    return info


def _bundle(folder: Path) -> Info:
    spec = _resolved(folder)
    try:
        manifest = read_manifest(folder, spec.architecture)
    except ManifestError as err:
        raise InfoError(str(err)) from None
    made = f"{manifest.dtype}{', ' + manifest.quantize + ' weights' if manifest.quantize else ''}"
    rows = [
        ("bundle", f"{spec.architecture}, target {manifest.target}, {made}"),
        ("graphs", ", ".join(f"{role} {name}" for role, name in manifest.graphs.items())),
        ("token ids", ", ".join(f"{k} {v}" for k, v in manifest.token_ids.as_dict().items()) or "none"),
        ("parity at export", manifest.parity or "not recorded (exported with --no-verify, or before Nima recorded it)"),
        ("made by", f"Nima {manifest.nima_version or '(unknown version)'}"),
        *describe(spec),
    ]
    info = Info(folder, "bundle", rows, _files(folder))
    info.rows += _tokenizer_rows(folder / TOKENIZER_FILE)
    prompt = "--prompt TEXT" if (folder / TOKENIZER_FILE).is_file() else "--prompt-ids 1,2,3"
    info.rows.append(("next", f"nima generate {folder} {prompt}"))
    return info


def _hugging_face(folder: Path) -> Info:
    """What ``nima import`` would make of the folder: the spec and its figures (from ``config.json``,
    no weight read), or why it would refuse; the weights' header and the tokenizer."""
    from nima.interop.hf.checkpoint import weights_problem
    from nima.interop.hf.config import read_json_object
    from nima.interop.hf.errors import ImportFailure
    from nima.interop.hf.spec_of import imported_spec

    try:
        config = read_json_object(folder / "config.json")  # bounded in size and depth, as the import reads it
    except ImportFailure as err:
        raise InfoError(str(err)) from None
    kind = config.get("model_type")
    info = Info(folder, "hugging face folder", [("model_type", str(kind))], _files(folder))
    try:
        _, _, spec = imported_spec(folder)
    except ImportFailure as err:
        info.rows.append(("import", f"refused: {str(err).splitlines()[0]}"))
        return info
    info.rows += _spec_rows(spec)
    problem = weights_problem(folder)
    if problem is not None:  # the spec is readable, the weights are not: say so, suggest nothing
        info.rows.append(("import", f"refused: {problem}"))
        return info
    if not _weights(info, folder / "model.safetensors"):  # nothing to suggest importing
        return info
    info.rows += _tokenizer_rows(folder / TOKENIZER_FILE)
    info.rows.append(("next", f"nima import {folder} -o MODEL_FOLDER"))
    return info


def _files(folder: Path) -> list[tuple[str, int]]:
    """Each file and folder at the top of ``folder`` with its size (a folder: the sum of its files)."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            continue
        if entry.is_dir():
            found.append((entry.name + "/", sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())))
        elif entry.is_file():
            found.append((entry.name, entry.stat().st_size))
    return found


UNREADABLE = "not a readable safetensors file"


def _weights(info: Info, path: Path) -> bool:
    """Add ``path``'s weights row to ``info`` when the file is there; False when its header is unreadable."""
    if not path.is_file():
        return True
    row = _weights_row(path)
    info.rows.append(("weights", row))
    return UNREADABLE not in row


def _weights_row(path: Path) -> str:
    """Tensor count, dtypes and parameters from the safetensors header (8-byte length, then JSON)."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > MAX_HEADER:
                return f"{size(path.stat().st_size)} (header of {length} bytes: not read)"
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as err:
        return f"{path.name}: {UNREADABLE} ({err})"
    if not isinstance(header, dict):
        return f"{path.name}: {UNREADABLE} (its header is no JSON object)"
    tensors = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    count = 0
    for name, entry in tensors.items():
        shape = entry.get("shape")
        sizes = isinstance(shape, list) and len(shape) <= 16 and all(type(n) is int and 0 <= n < 2**63 for n in shape)
        values = math.prod(shape) if sizes else 0
        if not sizes or values >= 2**63:
            return f"{path.name}: {UNREADABLE} (tensor {name[:80]!r}: shape {str(shape)[:40]})"
        count += values
    dtypes = sorted({str(v.get("dtype"))[:16] for v in tensors.values()})
    return f"{len(tensors)} tensors, {count:,} values, {'/'.join(dtypes)}, {size(path.stat().st_size)}"


def _tokenizer_rows(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return [("tokenizer", "none (prompts are token ids)")]
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception for unreadable files
        return [("tokenizer", f"{path.name}: not readable ({err})")]
    kind = json.loads(tokenizer.to_str()).get("model", {}).get("type", "?")
    return [("tokenizer", f"{kind}, {tokenizer.get_vocab_size(with_added_tokens=True):,} ids")]


def _run_rows(folder: Path) -> list[tuple[str, str]]:
    rows = []
    try:
        record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        data, tokens = record.get("data", {}), record.get("tokens", {})
        counts = f"{_count(tokens.get('train'))} train / {_count(tokens.get('val'))} val tokens"
        rows.append(("data", f"{data.get('path')} ({counts})"))
    except (OSError, ValueError, AttributeError, TypeError):
        rows.append(("data", f"{RUN_FILE}: not readable"))
    last = _last_metrics(folder / METRICS_FILE)
    for split in ("train", "val"):
        loss = last.get(split, {}).get("loss")
        if isinstance(loss, int | float):
            rows.append((f"last {split} loss", f"{loss:.4f} at step {last[split].get('step')}"))
    checkpoints = folder / CHECKPOINTS_DIR
    steps = sorted(p.name for p in checkpoints.glob("step-*")) if checkpoints.is_dir() else []
    rows.append(("checkpoints", ", ".join(steps) or "none"))
    return rows


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _last_metrics(path: Path) -> dict[str, dict[str, Any]]:
    """The last line of each split in ``metrics.jsonl`` (read from its tail only)."""
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - METRICS_TAIL))
        lines = f.read().decode("utf-8", errors="replace").splitlines()
    last: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the first line of the tail may be cut
        if isinstance(entry, dict) and isinstance(entry.get("split"), str):
            last[entry["split"]] = entry
    return last
