"""What exporting does differently per model family: one row per ``spec.architecture``.

`nima.export.bundle.export_bundle` is one straight function: check the options and the target
folder, load the source, then ask the family's row to write its graphs (in the chosen target's
form), check them against PyTorch, and describe them — special token ids, the manifest's
sections, files for other runtimes, the model card's template. Each family lives in a folder
with the same modules (``contract``, ``graph``, ``parity``, ``manifest``); a test holds this
table's keys equal to the spec's architectures and every row's targets within `nima.export.options.TARGETS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort
from torch import nn

from nima.export.decoder import manifest as decoder_manifest
from nima.export.decoder.parity import check_parity
from nima.export.extras import Extras
from nima.export.parity import ParityReport
from nima.export.seq2seq import manifest as seq2seq_manifest
from nima.export.seq2seq.graph import export_encoder_decoder
from nima.export.seq2seq.parity import check_seq2seq_parity
from nima.export.targets.ort.export import export_for_ort
from nima.export.targets.portable import export_portable
from nima.layout import DECODER_FILE, ENCODER_FILE, MODEL_FILE, TokenIds
from nima.spec import ModelSpec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Exported:
    """The graphs a target wrote: role ("decoder", "encoder") -> file, and whether the decoder graph
    also runs with one buffer as past and present (`nima.manifest.Manifest.share_buffer`)."""

    graphs: dict[str, Path]
    share_buffer: bool = False


# (model, spec, bundle folder, dtype, opset, progress) -> the graphs written into the folder
WriteGraphs = Callable[[nn.Module, ModelSpec, Path, str, int, Progress], Exported]
# (model, spec, a session per graph role, dtype, quantize) -> the report
Check = Callable[[nn.Module, ModelSpec, dict[str, ort.InferenceSession], str, str | None], ParityReport]


@dataclass(frozen=True)
class ExportFamily:
    """How one family exports; see the module docstring."""

    name: str  # in messages: "decoder-only models", "encoder-decoder models"
    targets: dict[str, WriteGraphs]  # target name -> how that target writes the graphs
    check: Check
    token_ids: Callable[[ModelSpec, Path | None, Path | None], TokenIds]  # (spec, model folder, tokenizer) -> ids
    io: Callable[[ModelSpec], dict[str, Any]]  # the manifest's per-family sections
    # (spec, token ids, shared cache, model folder, tokenizer file) -> files for other runtimes
    extra_files: Callable[[ModelSpec, TokenIds, bool, Path | None, Path | None], Extras]
    card: str  # the model card's template, in nima/export/templates


def _decoder_portable(
    model: nn.Module, spec: ModelSpec, folder: Path, dtype: str, opset: int, progress: Progress
) -> Exported:
    progress(f"exporting {MODEL_FILE} ({dtype}, target portable)")
    return Exported({"decoder": export_portable(model, spec, folder / MODEL_FILE, dtype=dtype, opset=opset)})


def _decoder_ort(
    model: nn.Module, spec: ModelSpec, folder: Path, dtype: str, opset: int, progress: Progress
) -> Exported:
    progress(f"exporting {MODEL_FILE} ({dtype}, target ort)")
    how = export_for_ort(model, spec, folder / MODEL_FILE, dtype=dtype, opset=opset)
    if how.fallback_reason:
        progress(f"no GroupQueryAttention ({how.fallback_reason}): onnxscript's ORT fusion rules instead")
    return Exported({"decoder": folder / MODEL_FILE}, share_buffer=how.shared_cache)


def _seq2seq_portable(
    model: nn.Module, spec: ModelSpec, folder: Path, dtype: str, opset: int, progress: Progress
) -> Exported:
    progress(f"exporting {ENCODER_FILE} and {DECODER_FILE} ({dtype})")
    encoder, decoder = export_encoder_decoder(model, spec, folder, dtype=dtype, opset=opset)
    return Exported({"encoder": encoder, "decoder": decoder})


FAMILIES: dict[str, ExportFamily] = {
    "decoder": ExportFamily(
        name="decoder-only",
        targets={"portable": _decoder_portable, "ort": _decoder_ort},
        check=lambda model, spec, sessions, dtype, quantize: check_parity(
            model, spec, sessions["decoder"], dtype=dtype, quantize=quantize
        ),
        token_ids=decoder_manifest.token_ids,
        io=decoder_manifest.io,
        extra_files=decoder_manifest.extra_files,
        card="decoder_card.md.j2",
    ),
    "encoder-decoder": ExportFamily(
        name="encoder-decoder",
        targets={"portable": _seq2seq_portable},
        check=lambda model, spec, sessions, dtype, quantize: check_seq2seq_parity(
            model, spec, sessions["encoder"], sessions["decoder"], dtype=dtype, quantize=quantize
        ),
        token_ids=seq2seq_manifest.token_ids,
        io=seq2seq_manifest.io,
        extra_files=seq2seq_manifest.extra_files,
        card="seq2seq_card.md.j2",
    ),
}
