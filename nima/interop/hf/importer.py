"""`import_hf`: a Hugging Face model folder -> a Nima model folder (``nima.json`` + ``model.safetensors``).

The folder's ``config.json`` becomes a spec through its architecture's row (`architectures`); the
spec is built on PyTorch's ``meta`` device, which allocates nothing, to learn every parameter's
name and shape; then each weight is read from the checkpoint, reshaped where the layouts differ,
checked against its shape and written (`nima.interop.safetensors_stream`), one at a time. Before
anything is written, every tensor the spec needs must be in the checkpoint and every tensor in
the checkpoint must be used, so a weight is never dropped or invented silently.

Besides the weights the model folder gets ``tokenizer.json``, ``tokenizer_config.json`` (its
special tokens, and its chat template) and ``chat_template.jinja`` (where transformers 5 keeps the
template) copied when the source has them, and the spec's ``generation``
section from ``generation_config.json``. The folder is written whole through a staged folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from nima import __version__
from nima.builders import build_model
from nima.interop.hf.architectures import HfArchitecture
from nima.interop.hf.checkpoint import Checkpoint
from nima.interop.hf.config import HfConfig, read_json_object
from nima.interop.hf.errors import ImportFailure
from nima.interop.hf.layouts import Map
from nima.interop.hf.spec_of import imported_spec
from nima.interop.safetensors_stream import write_safetensors
from nima.layout import (
    CHAT_TEMPLATE_FILE,
    SPEC_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_EXTRAS,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    copy_file,
    staged_folder,
    write_json,
)
from nima.spec import ModelSpec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Progress = Callable[[int, int], None]  # (tensors written, tensors in all)


@dataclass(frozen=True)
class ImportResult:
    out: Path
    spec: ModelSpec
    model_type: str
    tensors: int
    weight_bytes: int
    files: list[str]


def import_hf(
    source: Path,
    out: Path,
    dtype: str = "fp32",
    progress: Progress = lambda done, total: None,
    replace: bool = False,
) -> ImportResult:
    """Import the Hugging Face folder ``source`` into the model folder ``out`` (which the caller has
    checked may be written; ``replace``: an earlier model folder there may be replaced); `ImportFailure`
    naming the file, key or tensor, with nothing written."""
    if dtype not in DTYPES:
        raise ImportFailure(f"--dtype {dtype}: supported are {', '.join(DTYPES)}")
    config, architecture, spec = imported_spec(source)
    with Checkpoint(source, architecture.body_prefix) as checkpoint:
        return _write(source, out, dtype, progress, replace, config, spec, checkpoint, architecture)


def _write(
    source: Path,
    out: Path,
    dtype: str,
    progress: Progress,
    replace: bool,
    config: HfConfig,
    spec: ModelSpec,
    checkpoint: Checkpoint,
    architecture: HfArchitecture,
) -> ImportResult:
    """Write the model folder: the spec, the weights tensor by tensor, the tokenizer files."""
    plan = _plan(spec, architecture, checkpoint)
    _check_tokenizer_files(source)  # before anything is written: a broken file was copied and found at export
    shapes = {name: shape for name, (_, shape) in plan.items()}
    with staged_folder(out, replace=replace) as tmp:
        write_json(tmp / SPEC_FILE, spec.model_dump(mode="json"))
        write_safetensors(
            tmp / WEIGHTS_FILE,
            shapes,
            DTYPES[dtype],
            _tensors(plan, checkpoint, spec, source),
            metadata={"format": "pt", "source": "Hugging Face transformers", "nima_version": __version__},
            on_tensor=lambda _, done=iter(range(1, len(plan) + 1)): progress(next(done), len(plan)),
        )
        for name in (TOKENIZER_FILE, *TOKENIZER_EXTRAS):
            if (source / name).is_file():
                copy_file(source / name, tmp / name)
        files = sorted(p.name for p in tmp.iterdir())
        weight_bytes = (tmp / WEIGHTS_FILE).stat().st_size
    return ImportResult(out, spec, config.model_type, len(plan), weight_bytes, files)


MAX_TOKENIZER_BYTES = 256 << 20  # the largest tokenizer.json files in use are about 35 MB
MAX_TEMPLATE_BYTES = 1 << 20


def _check_tokenizer_files(source: Path) -> None:
    """The tokenizer files the model folder takes must be what they say: ``tokenizer.json`` a tokenizer
    that loads (within `MAX_TOKENIZER_BYTES`), ``tokenizer_config.json`` a JSON object, the chat template
    UTF-8 text within `MAX_TEMPLATE_BYTES`; `ImportFailure` naming the file."""
    from tokenizers import Tokenizer

    path = source / TOKENIZER_FILE
    if path.is_file():
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise ImportFailure(f"{path}: {path.stat().st_size:,} bytes; not a tokenizer")
        try:
            Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception for malformed files
            raise ImportFailure(f"{path}: not a readable tokenizer.json ({str(err).splitlines()[0][:200]})") from None
    if (source / TOKENIZER_CONFIG_FILE).is_file():
        read_json_object(source / TOKENIZER_CONFIG_FILE)
    template = source / CHAT_TEMPLATE_FILE
    if template.is_file():
        if template.stat().st_size > MAX_TEMPLATE_BYTES:
            raise ImportFailure(f"{template}: {template.stat().st_size:,} bytes; not a chat template")
        try:
            template.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ImportFailure(f"{template}: not readable UTF-8 text ({type(err).__name__})") from None


def _plan(
    spec: ModelSpec, architecture: HfArchitecture, checkpoint: Checkpoint
) -> dict[str, tuple[Map, tuple[int, ...]]]:
    """Every parameter the spec's model has -> (its map, with the layer filled in; its shape), checked
    against the checkpoint's names before anything is read."""
    with torch.device("meta"):
        model = build_model(spec)  # shapes only: meta tensors hold no data
    wanted = {name: tuple(p.shape) for name, p in model.named_parameters()}  # a tied head: once, as the embedding
    maps: dict[str, Map] = {}
    for entry in architecture.weights:
        for placed in entry.expand(spec):
            if placed.nima in wanted:
                maps[placed.nima] = placed
    unmapped = sorted(set(wanted) - set(maps))
    if unmapped:
        raise ImportFailure(f"Nima has no source for {unmapped[0]} in a {checkpoint.folder} checkpoint")
    missing = sorted({m.hf for m in maps.values() if not checkpoint.has(m.hf)})
    if missing:
        raise ImportFailure(f"{checkpoint.folder}: the checkpoint has no tensor {missing[0]!r}")
    used = {checkpoint.resolve(m.hf) for m in maps.values()}
    ignored = [re.compile(pattern) for pattern in architecture.ignored]
    if spec.tie_embeddings:
        ignored.append(re.compile(r"^lm_head\.weight$"))  # some tied checkpoints store the head as well
    unused = sorted(n for n in checkpoint.names - used if not any(p.search(n) for p in ignored))
    if unused:
        more = f" and {len(unused) - 1} more" if len(unused) > 1 else ""
        raise ImportFailure(
            f"{checkpoint.folder}: the checkpoint's tensor {unused[0]!r}{more} has no place in the spec the config "
            "describes (a config that does not match its weights, or a variant Nima does not read)"
        )
    return {name: (maps[name], wanted[name]) for name in sorted(maps)}


def _tensors(
    plan: dict[str, tuple[Map, tuple[int, ...]]], checkpoint: Checkpoint, spec: ModelSpec, source: Path
) -> Iterator[tuple[str, torch.Tensor]]:
    """Each planned weight, read and reshaped as its map says, in the plan's (sorted) order."""
    for name, (entry, shape) in plan.items():
        tensor = entry.layout.take(checkpoint.get(entry.hf), spec)
        if tuple(tensor.shape) != shape:
            raise ImportFailure(
                f"{source}: tensor {entry.hf!r} has shape {tuple(checkpoint.shape(entry.hf) or ())}, "
                f"where the config's sizes need {shape} for {name}"
            )
        yield name, tensor
