"""`export_bundle`: source -> verified bundle, for every model family. `nima export --onnx` is a thin
wrapper around it.

One straight pipeline: check the options and the target folder, load the source, then in a
staged folder (`nima.layout.staged_folder`: nothing reaches ``out`` unless everything passed)
write the family's graphs in the target's form, quantize them, check them against PyTorch,
and write the spec, the manifest, the tokenizer, files for other runtimes and the model card.
What differs per family is a row of `nima.export.families.FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nima import __version__
from nima.export.card import render_card
from nima.export.errors import ParityFailure, UnsupportedExport
from nima.export.families import FAMILIES
from nima.export.options import check_options
from nima.export.parity import ParityReport, session_for
from nima.export.quantize import quantize_in_place
from nima.export.source import load_source
from nima.export.target_folder import check_target
from nima.layout import (
    CARD_FILE,
    CHAT_TEMPLATE_FILE,
    MANIFEST_FILE,
    SPEC_FILE,
    TOKENIZER_FILE,
    copy_file,
    staged_folder,
    write_json,
)
from nima.manifest import Manifest

DEFAULT_OPSET = 18


@dataclass
class ExportResult:
    out: Path
    parity: ParityReport | None
    random_weights: bool
    files: list[str]
    notes: list[str] = field(default_factory=list)  # files for other runtimes left out, and why


def export_bundle(
    source: Path,
    out: Path,
    dtype: str = "fp32",
    quantize: str | None = None,
    target: str = "portable",
    verify: bool = True,
    force: bool = False,
    overrides: list[str] | None = None,
    opset: int = DEFAULT_OPSET,
    progress: Callable[[str], None] = lambda _: None,
) -> ExportResult:
    """Export ``source`` (a model folder or a spec file) to a bundle folder ``out``; raises before
    writing anything on bad input, and writes nothing when the check fails."""
    check_options(dtype, quantize, target)
    check_target(out, force, source)
    progress("loading source")
    src = load_source(source, overrides)
    family = FAMILIES[src.spec.architecture]
    if target not in family.targets:
        takers = [f.name for f in FAMILIES.values() if target in f.targets]
        raise UnsupportedExport(
            f"{source}: --target {target} is for {' and '.join(takers)} models; "
            f"{family.name} models export {' or '.join(family.targets)} graphs"
        )
    ids = family.token_ids(src.spec, src.folder, src.tokenizer)
    with staged_folder(out, replace=force) as tmp:  # check_target allowed an earlier bundle only
        exported = family.targets[target](src.model, src.spec, tmp, dtype, opset, progress)
        if quantize is not None:
            progress(f"quantizing MatMul weights to {quantize}")
            for graph in exported.graphs.values():
                quantize_in_place(graph, quantize, ort_kernels=target == "ort")
        parity = None
        if verify:
            progress("checking ONNX Runtime against PyTorch")
            sessions = {role: session_for(graph) for role, graph in exported.graphs.items()}
            parity = family.check(src.model, src.spec, sessions, dtype, quantize)
            if not parity.passed:
                raise ParityFailure(parity, quantize, src.random_weights)
        manifest = Manifest(
            architecture=src.spec.architecture,
            graphs={role: graph.name for role, graph in exported.graphs.items()},
            token_ids=ids,
            share_buffer=exported.share_buffer,
            dtype=dtype,
            quantize=quantize,
            target=target,
            nima_version=__version__,
            io=family.io(src.spec),
            parity=None if parity is None else parity.describe(),
        )
        write_json(tmp / SPEC_FILE, src.spec.model_dump(mode="json"))
        write_json(tmp / MANIFEST_FILE, manifest.to_dict())
        extras = family.extra_files(src.spec, ids, exported.share_buffer, src.folder, src.tokenizer)
        for name, data in extras.files.items():
            if isinstance(data, Path):
                copy_file(data, tmp / name)
            else:
                write_json(tmp / name, data)
        if src.tokenizer is not None:
            copy_file(src.tokenizer, tmp / TOKENIZER_FILE)
            template = src.folder / CHAT_TEMPLATE_FILE if src.folder is not None else None
            if template is not None and template.is_file():  # transformers 5 keeps the chat template here
                copy_file(template, tmp / CHAT_TEMPLATE_FILE)
        card = render_card(
            family.card, src.spec, manifest, parity, src.tokenizer is not None, opset, extras.files, extras.notes
        )
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        files = sorted(p.name for p in tmp.iterdir())
    return ExportResult(out, parity, src.random_weights, files, extras.notes)
