"""torch -> ONNX for an encoder-decoder: ``encoder.onnx`` and ``decoder.onnx`` (see `seq2seq_contract`).

Both go through the decoder-only path's `export_module` (dynamo export, onnxscript's
optimiser, ``onnx.checker``), each with its own wrapper and symbolic dimensions.
"""

from __future__ import annotations

from pathlib import Path

from nima.builders.models import EncoderDecoderLM
from nima.export.onnx_graph import DTYPES, export_module
from nima.export.packed_model import packed_for_export
from nima.export.seq2seq_contract import (
    DecoderForExport,
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
from nima.runtime.names import DECODER_FILE, ENCODER_FILE
from nima.spec import ModelSpec


def export_encoder_decoder(
    model: EncoderDecoderLM, spec: ModelSpec, folder: Path, dtype: str = "fp32", opset: int = 18
) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` of ``model`` (in ``dtype``) into ``folder``, from its
    packed copy (`nima.export.packed_model`: one MatMul for each self-attention's q, k and v)."""
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
        DecoderForExport(model),
        decoder_example(n, spec.n_kv_heads, spec.head_dim, spec.vocab_size, DTYPES[dtype]),
        decoder_shapes(n),
        (decoder_input_names(n), decoder_output_names(n)),
        folder / DECODER_FILE,
        opset,
    )
    return encoder, decoder
