"""torch -> ONNX for one module, through `torch.onnx.export(dynamo=True)`: every graph Nima writes
goes through `export_module` (the decoder's, the encoder-decoder's two, each target's).

The dynamo exporter traces the module once with symbolic batch, sequence and cache lengths
and runs onnxscript's optimiser (constant folding, dead-code removal) on the result. Weights
go to external data (``model.onnx.data`` beside the graph) when they pass `EXTERNAL_BYTES`: ONNX
Runtime maps that file instead of parsing the weights out of the protobuf, which at 124M took
the peak memory of a process that loads the fp32 bundle and decodes from 734 to 558 MiB and the
load from 1.9 to 0.6 s (bench/tables.py's process, 2026-12-07), and at 9M a fp32 bundle's from 182
to 138 MiB (inside the protobuf, the weights are parsed, copied into tensors and prepacked: three
copies at once); above 2 GB protobuf cannot hold them at all. Graphs of toy size (under 1 MB of
weights) stay one file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import onnx_ir as ir
import torch
from torch import nn

from nima.export.errors import ExportError

PROTOBUF_LIMIT = 2 * 1024**3  # the most a protobuf message holds
EXTERNAL_BYTES = 1024**2  # weights past this go to external data (see the module docstring)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def in_dtype(model: nn.Module, dtype: str) -> nn.Module:
    """``model`` in ``dtype``, in eval mode; a copy unless fp32, so the caller keeps its fp32 model."""
    torch_dtype = DTYPES[dtype]
    if torch_dtype != torch.float32:
        model = copy.deepcopy(model)  # .to() is in place
    return model.to(torch_dtype).eval()


def export_module(
    module: nn.Module,
    args: tuple[object, ...],
    shapes: dict[str, object],
    names: tuple[list[str], list[str]],
    path: Path,
    opset: int,
    translations: dict[Callable, Callable] | None = None,
    edit: Callable[[ir.Model], object] | None = None,
) -> Path:
    """Export ``module`` called on ``args`` (dynamic ``shapes``; input and output ``names``), save and check it.

    ``translations``: custom torch ops in ``module`` -> the onnxscript functions that write them.
    ``edit``: a change made to the exported graph before it is saved.
    """
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    quiet = io.StringIO()
    # the exporter narrates each stage on stdout and warns about internals users cannot act on
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), _quiet_loggers():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=names[0],
                output_names=names[1],
                opset_version=opset,
                optimize=True,
                custom_translation_table=translations,
            )
        except Exception as err:  # the exporter raises many types; all mean "cannot export"
            raise ExportError(f"torch.onnx.export failed: {type(err).__name__}: {str(err).splitlines()[0]}") from err
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    if edit is not None:
        edit(program.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=weight_bytes > min(EXTERNAL_BYTES, PROTOBUF_LIMIT))
    onnx.checker.check_model(str(path), full_check=True)
    return path


@contextlib.contextmanager
def _quiet_loggers():  # noqa: ANN202 - a context manager
    names = ["torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch.fx.experimental.symbolic_shapes"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
