"""`nima train SPEC`: training from the command line.

Registered on the `nima` app by `nima.cli.app`.
torch is imported only when the command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from nima.cli.common import EXIT_BAD_INPUT, SetOption, fail, load_or_fail, path_given, require_torch
from nima.layout import SPEC_FILE


def train(
    spec: Annotated[
        Path,
        typer.Argument(
            metavar="SOURCE",
            help="Spec file (.yaml, .yml or .json), or a model folder to fine-tune (its weights and tokenizer).",
            show_default=False,
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            "-d",
            parser=path_given,
            help="A text file or a folder of .txt files; for an encoder-decoder, a .tsv (source<TAB>target) "
            'or .jsonl ({"source", "target"}) file of pairs. Not needed with --resume.',
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", parser=path_given, help="Run folder (default: runs/<spec name>).", show_default=False
        ),
    ] = None,
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in the run folder.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a run already in the run folder.")] = False,
) -> None:
    """Train SOURCE on text (or pairs); the run folder ends up holding nima.json, model.safetensors and tokenizer.json.

    SOURCE a model folder (nima build -o, nima import, an earlier run): the run starts from its weights and
    encodes the data with its tokenizer.json (fine-tuning; decoder-only models).

    Under `torchrun --nproc_per_node N -m nima train ...` the processes train together (DDP, or
    FSDP with training.distributed: fsdp); only rank 0 writes files and prints.
    """
    start_from = spec if spec.is_dir() else None
    if start_from is not None and not (start_from / SPEC_FILE).is_file():
        fail(f"{spec}: a folder without {SPEC_FILE}: give a spec file or a model folder")
    model_spec = load_or_fail(spec / SPEC_FILE if start_from is not None else spec, overrides)
    if resume and force:
        fail("--resume and --force: choose one (continue the run, or replace it)")
    import os

    require_torch("train")
    from nima.train import Interrupted, PeerFailed, TrainError
    from nima.train import train as run_training

    if out is None:
        from nima.train.rundir import folder_name_problem

        problem = folder_name_problem(model_spec.name)
        if problem is not None:
            fail(f"{spec}: name: {model_spec.name!r} {problem}, and without -o a run goes to runs/<name>; pass -o")
    run_dir = out if out is not None else Path("runs") / model_spec.name
    try:
        state = run_training(model_spec, run_dir, data=data, resume=resume, force=force, start_from=start_from)
    except Interrupted as stopped:
        typer.echo(f"{run_dir}: {stopped}", err=True)
        sys.exit(130)  # not typer.Exit: `main` would add a bare "interrupted" line
    except PeerFailed:
        raise typer.Exit(EXIT_BAD_INPUT) from None  # rank 0 prints the problem
    except TrainError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{run_dir}: cannot write ({err.strerror or err})")
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"{run_dir}: step {state.step}, {state.tokens:,} tokens, {state.elapsed_s:.1f} s")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A finished distributed run's files are all written and closed, and the process group is gone; the
        # interpreter's own teardown can still abort a rank in gloo's threads ("terminate called without an
        # active exception", about 1 in 200 runs under load, after the barrier `teardown_world` adds), which
        # torchrun reports as a failed run. So a rank leaves without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
