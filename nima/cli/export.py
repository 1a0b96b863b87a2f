"""`nima export SOURCE --onnx -o BUNDLE`: a verified bundle (the library call: `nima.export.bundle.export_bundle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nima.cli.common import SetOption, fail, load_or_fail, path_given, require_runtime, require_torch

HF_FOLDER_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
}


def _export_hf(source: Path, out: Path, force: bool) -> None:
    """`nima export --hf`: the model folder ``source`` as a transformers folder ``out``."""
    require_torch("export --hf")
    from nima.interop.hf.exporter import ExportHfError, export_hf
    from nima.layout import SPEC_FILE, WEIGHTS_FILE

    if not (source / SPEC_FILE).is_file() or not (source / WEIGHTS_FILE).is_file():
        fail(f"{source}: not a model folder (nima.json and model.safetensors, from nima build, train or import)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        names = {p.name for p in out.iterdir()} if out.is_dir() else {out.name}
        if not force:
            fail(f"{out}: exists and is not empty; pass --force to replace a transformers folder there")
        if not out.is_dir() or not names <= HF_FOLDER_FILES:
            fail(f"{out}: not a transformers folder written by nima export --hf, so --force will not delete it")
    try:
        result = export_hf(source, out, replace=force)
    except ExportHfError as err:
        fail(err.reasons)
    except OSError as err:
        fail(f"{out}: cannot write ({err.strerror or err})")
    typer.echo(f"wrote {out}/ as {result.model_type} ({', '.join(result.files)})")


def export(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="SOURCE", help="A model folder (nima build / nima train output) or a spec file.", show_default=False
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", parser=path_given, help="Bundle folder to write.", show_default=False)
    ],
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to an ONNX bundle (the default).")] = False,
    hf: Annotated[
        bool, typer.Option("--hf", help="Export a model folder as a Hugging Face transformers folder instead.")
    ] = False,
    dtype: Annotated[str, typer.Option(help="Weights and activations: fp32 | fp16.")] = "fp32",
    quantize: Annotated[
        str | None,
        typer.Option(help="Quantize MatMul weights: int8 (ort: 8-bit MatMulNBits; portable: MatMulInteger) | int4."),
    ] = None,
    target: Annotated[
        str, typer.Option(help="portable: standard ONNX ops; ort: ONNX Runtime's fused contrib ops.")
    ] = "portable",
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check ONNX Runtime against PyTorch before writing.")
    ] = True,
    overrides: SetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier bundle (only a bundle).")] = False,
) -> None:
    """Export SOURCE as a deployable ONNX bundle (--onnx, the default), or as a transformers folder (--hf).

    A decoder's bundle holds model.onnx with a KV cache, nima.json, bundle.json, genai_config.json and
    README.md; an encoder-decoder's encoder.onnx and decoder.onnx, nima.json, bundle.json and README.md.
    """
    if onnx and hf:
        fail("pass one of --onnx (an ONNX bundle, the default) and --hf (a transformers folder)")
    if hf:
        given = {"--dtype": (dtype, "fp32"), "--quantize": (quantize, None), "--target": (target, "portable")}
        changed = [flag for flag, (value, default) in given.items() if value != default]
        if changed or overrides:
            fail(f"{(changed or ['--set'])[0]} applies to --onnx; --hf writes the model folder's weights as they are")
        _export_hf(source, out, force)
        return
    from rich.console import Console
    from rich.markup import escape

    from nima.export.errors import UnsupportedExport
    from nima.export.options import check_options

    try:
        check_options(dtype, quantize, target)  # a mistyped flag before seconds of importing torch
    except UnsupportedExport as err:
        fail(str(err))
    require_torch("export")
    require_runtime("export")  # the check against PyTorch and quantization run the graphs
    from nima.builders.weights import WeightsError
    from nima.export.bundle import export_bundle
    from nima.export.errors import BundleError, ExportError, ParityFailure, SourceError
    from nima.spec import SpecError

    console = Console(stderr=True)
    if source.is_file():
        load_or_fail(source, overrides)  # a spec with errors gets them alone, without the warning below
        console.print(
            f"[yellow]warning:[/] {escape(str(source))} is a spec file: exporting randomly initialised weights"
        )
    try:
        with console.status("exporting") as status:

            def progress(message: str) -> None:
                """The spinner's text on a terminal; a line each in a log, so a long export is not silent."""
                if console.is_terminal:
                    status.update(escape(message))
                else:
                    console.print(f"{message} ...", markup=False, highlight=False)

            result = export_bundle(
                source,
                out,
                dtype=dtype,
                quantize=quantize,
                target=target,
                verify=verify,
                force=force,
                overrides=overrides,
                progress=progress,
            )
    except SpecError as err:
        fail([str(p) for p in err.problems])
    except (SourceError, WeightsError, BundleError, UnsupportedExport) as err:
        fail(str(err))
    except ParityFailure as err:
        fail(str(err), code=1)
    except ExportError as err:
        fail(f"{source}: {err}", code=1)
    except OSError as err:
        fail(f"{out}: cannot write ({err.strerror or err})")
    if result.parity is not None:
        console.print(f"parity: {result.parity.describe()}", markup=False)
    for note in result.notes:
        console.print(f"[yellow]warning:[/] {escape(note)}")
    typer.echo(f"wrote {out}/ ({', '.join(result.files)})")
