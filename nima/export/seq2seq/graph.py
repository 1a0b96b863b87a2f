"""torch -> ONNX for an encoder-decoder: ``encoder.onnx`` and ``decoder.onnx`` (see `contract`).

Both go through `nima.export.dynamo.export_module` (dynamo export, onnxscript's optimiser,
``onnx.checker``), each with its own wrapper and symbolic dimensions.
"""

from __future__ import annotations

from pathlib import Path

from nima.builders.models import EncoderDecoderLM
from nima.export.dynamo import DTYPES, export_module
from nima.export.seq2seq.contract import (
    CrossDecoderForExport,
    EncoderForExport,
    decoder_example,
    decoder_input_names,
    decoder_output_names,
    decoder_shapes,
    encoder_example,
    encoder_input_names,
    encoder_output_names,
    encoder_shapes,
)
from nima.export.targets.portable import packed_for_export
from nima.layout import DECODER_FILE, ENCODER_FILE
from nima.spec import ModelSpec


def export_encoder_decoder(
    model: EncoderDecoderLM, spec: ModelSpec, folder: Path, dtype: str = "fp32", opset: int = 18
) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` of ``model`` (in ``dtype``) into ``folder``, from its
    packed copy (`nima.export.targets.portable`: one MatMul for each self-attention's q, k and v)."""
    model = packed_for_export(model).to(DTYPES[dtype])  # a copy already: `in_dtype`'s own copy is not needed
    n = spec.n_layers  # decoder layers: one cross-attention cache each
    encoder = export_module(
        EncoderForExport(model),
        encoder_example(spec.vocab_size),
        encoder_shapes(),
        (encoder_input_names(), encoder_output_names(n)),
        folder / ENCODER_FILE,
        opset,
    )
    decoder = export_module(
        CrossDecoderForExport(model),
        decoder_example(n, spec.n_kv_heads, spec.head_dim, spec.vocab_size, DTYPES[dtype]),
        decoder_shapes(n),
        (decoder_input_names(n), decoder_output_names(n)),
        folder / DECODER_FILE,
        opset,
    )
    return encoder, decoder
