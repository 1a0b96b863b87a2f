"""`nima export --onnx`: source -> verified bundle. The CLI is a thin wrapper around `export_bundle`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nima.builders.models import EncoderDecoderLM
from nima.builders.weights import SPEC_FILE
from nima.export.bundle import check_target, staged_folder
from nima.export.card import render_card
from nima.export.fuse import TARGETS, export_for_ort
from nima.export.genai import genai_config
from nima.export.packed_model import export_portable
from nima.export.quantize import QUANTIZATIONS, quantize_in_place
from nima.export.seq2seq_bundle import export_seq2seq_bundle
from nima.export.source import TOKENIZER_FILE, load_source, special_token_ids
from nima.export.verify import ParityReport, check_parity, session_for
from nima.runtime.names import GENAI_CONFIG_FILE

MODEL_FILE = "model.onnx"
CARD_FILE = "README.md"
DEFAULT_OPSET = 18


class UnsupportedExport(ValueError):
    """An option combination or model family this exporter does not handle."""


class ParityFailure(RuntimeError):
    """The exported graph's logits differ from PyTorch's by more than the tolerance."""

    def __init__(self, report: ParityReport) -> None:
        self.report = report
        super().__init__(f"ONNX Runtime differs from PyTorch beyond tolerance: {report.describe()}; no bundle written")


@dataclass
class ExportResult:
    out: Path
    parity: ParityReport | None
    random_weights: bool
    files: list[str]


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
    """Export ``source`` to a bundle folder ``out``; raises before writing anything on bad input."""
    if dtype == "bf16":
        raise UnsupportedExport(
            "--dtype bf16: ONNX Runtime's CPU provider has no bf16 MatMul, Add or Mul kernels, so a bf16 "
            "graph could not be verified here nor run on a CPU; use fp16 (or fp32 with --quantize)"
        )
    if dtype not in ("fp32", "fp16"):
        raise UnsupportedExport(f"--dtype {dtype}: supported are fp32 and fp16")
    if target not in TARGETS:
        raise UnsupportedExport(f"--target {target}: supported are {', '.join(TARGETS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UnsupportedExport(f"--quantize {quantize}: supported are {', '.join(QUANTIZATIONS)}")
    if quantize is not None and dtype != "fp32":
        raise UnsupportedExport(f"--quantize {quantize} starts from the fp32 graph; drop --dtype {dtype}")
    check_target(out, force, source)
    progress("loading source")
    src = load_source(source, overrides)
    if isinstance(src.model, EncoderDecoderLM):  # encoder.onnx + decoder.onnx: nima.export.seq2seq_bundle
        if target != "portable":
            raise UnsupportedExport(
                f"{source}: --target {target} is for decoder-only models; an encoder-decoder exports portable graphs"
            )
        folder = source if source.is_dir() else None
        parity, files = export_seq2seq_bundle(src, folder, out, dtype, verify, opset, progress, quantize)
        return ExportResult(out, parity, src.random_weights, files)
    with staged_folder(out) as tmp:
        progress(f"exporting {MODEL_FILE} ({dtype}, target {target})")
        model_path = tmp / MODEL_FILE
        shared_cache = False
        if target == "ort":
            how = export_for_ort(src.model, src.spec, model_path, dtype=dtype, opset=opset)
            if how.fallback_reason:
                progress(f"no GroupQueryAttention ({how.fallback_reason}): onnxscript's ORT fusion rules instead")
            shared_cache = how.shared_cache
        else:
            export_portable(src.model, src.spec, model_path, dtype=dtype, opset=opset)
        if quantize is not None:
            progress(f"quantizing MatMul weights to {quantize}")
            quantize_in_place(model_path, quantize)
        parity = None
        if verify:
            progress("checking ONNX Runtime against PyTorch")
            parity = check_parity(src.model, src.spec, session_for(model_path), dtype=dtype, quantize=quantize)
            if not parity.passed:
                raise ParityFailure(parity)
        (tmp / SPEC_FILE).write_text(json.dumps(src.spec.model_dump(mode="json"), indent=2) + "\n")
        if src.tokenizer is not None:
            shutil.copyfile(src.tokenizer, tmp / TOKENIZER_FILE)
        eos, bos, pad = special_token_ids(src.tokenizer)
        config = genai_config(
            src.spec, MODEL_FILE, eos_token_id=eos, bos_token_id=bos, pad_token_id=pad, share_buffer=shared_cache
        )
        (tmp / GENAI_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        card = render_card(src.spec, dtype, quantize, parity, src.tokenizer is not None, opset, target)
        (tmp / CARD_FILE).write_text(card)
        files = sorted(p.name for p in tmp.iterdir())
    return ExportResult(out, parity, src.random_weights, files)
