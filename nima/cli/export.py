"""`nima export SOURCE --onnx -o BUNDLE`: a verified bundle (the library call: `nima.export.bundle.export_bundle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nima.cli.common import SetOption, fail, load_or_fail, path_given, require_torch


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
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the one format so far).")] = False,
    dtype: Annotated[str, typer.Option(help="Weights and activations: fp32 | fp16.")] = "fp32",
    quantize: Annotated[
        str | None, typer.Option(help="Quantize MatMul weights: int8 (dynamic) | int4 (block-wise MatMulNBits).")
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
    """Export SOURCE as a deployable bundle: model.onnx with a KV cache, nima.json, bundle.json, genai_config.json,
    README.md.

    An encoder-decoder exports encoder.onnx and decoder.onnx, nima.json, bundle.json and README.md.
    """
    if not onnx:
        fail("nothing to export: pass --onnx")
    from rich.console import Console

    require_torch("export")
    from nima.builders.weights import WeightsError
    from nima.export.bundle import export_bundle
    from nima.export.errors import BundleError, ExportError, ParityFailure, SourceError, UnsupportedExport
    from nima.spec import SpecError

    console = Console(stderr=True)
    if source.is_file():
        load_or_fail(source, overrides)  # a spec with errors gets them alone, without the warning below
        console.print(f"[yellow]warning:[/] {source} is a spec file: exporting randomly initialised weights")
    try:
        with console.status("exporting") as status:
            result = export_bundle(
                source,
                out,
                dtype=dtype,
                quantize=quantize,
                target=target,
                verify=verify,
                force=force,
                overrides=overrides,
                progress=lambda msg: status.update(msg),
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
        console.print(f"parity: {result.parity.describe()}")
    typer.echo(f"wrote {out}/ ({', '.join(result.files)})")
