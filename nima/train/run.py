"""`train`: what ``nima train`` calls. Checks the input, sets up the run folder, builds the parts, runs the loop.

Order matters for bad input: every check that can fail (run folder, data, tokenizer size,
data size, resume compatibility, checkpoint integrity) runs before the first byte is written.
Under torchrun, rank 0 alone prepares the folder and the packed data while the others wait,
and a failure there stops every rank (`main_first`).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console

from nima import __version__
from nima.builders import build_model
from nima.builders.weights import WeightsError, load_weights
from nima.layout import (
    METRICS_FILE,
    PLOT_FILE,
    RUN_FILE,
    SPEC_FILE,
    TOKENIZER_EXTRAS,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    copy_file,
    write_atomic,
    write_json,
)
from nima.spec import ModelSpec, parameter_count
from nima.train.busy import busy_hint, idle_cpus
from nima.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from nima.train.data import Corpus
from nima.train.distributed import World, main_first, setup_world, teardown_world, wrap_model
from nima.train.errors import PeerFailed, TrainError
from nima.train.families import FAMILIES
from nima.train.loop import Run, train_loop
from nima.train.metrics import MetricsLog, plot_losses
from nima.train.optim import build_optimizer
from nima.train.pairs import PairCorpus
from nima.train.precision import resolve_precision
from nima.train.progress import Quiet, Reporter
from nima.train.rundir import check_new_run, check_resume, clear_run
from nima.train.start import Start, check_start


def train(
    spec: ModelSpec,
    run_dir: Path,
    data: Path | None = None,
    resume: bool = False,
    force: bool = False,
    console: Console | None = None,
    start_from: Path | None = None,
) -> TrainState:
    """Train ``spec`` on ``data`` into ``run_dir`` (or continue the run there); returns the final state.

    ``start_from``: a model folder (`nima build -o`, `nima import`, a run) whose weights the run starts
    from instead of the spec's initialisation, and whose ``tokenizer.json``, when it has one, encodes the
    data instead of a tokenizer trained on it: fine-tuning (an encoder-decoder also needs the folder's
    special ids, `nima.train.start`).

    Raises `TrainError` (one line, naming the file or field) for anything the user can fix.
    """
    world = setup_world()
    threads = torch.get_num_threads()
    finished = False
    try:
        state = _train(spec, run_dir, data, resume, force, world, console or Console(stderr=True), start_from)
        finished = True
        return state
    except TrainError as err:
        if world.is_main or isinstance(err, PeerFailed):
            raise
        raise PeerFailed(str(err)) from None  # rank 0 reports the same problem
    finally:
        torch.set_num_threads(threads)  # training.cpu_threads applies to this call only
        teardown_world(world, finished)


def _train(
    spec: ModelSpec,
    run_dir: Path,
    data: Path | None,
    resume: bool,
    force: bool,
    world: World,
    console: Console,
    start_from: Path | None = None,
) -> TrainState:
    tr = spec.training
    resolve_precision(tr.precision, world.device)
    start = check_start(spec, start_from, run_dir) if start_from is not None and not resume else None
    checkpoint = main_first(world, lambda: _prepare(spec, run_dir, data, resume, force, start))
    if resume and not world.is_main:
        checkpoint = check_resume(run_dir, spec, None)
    if world.device.type == "cpu" and tr.cpu_threads:
        torch.set_num_threads(tr.cpu_threads)
    hint = None
    if world.device.type == "cpu" and not tr.cpu_threads and world.size == 1:
        hint = busy_hint(torch.get_num_threads(), idle_cpus(os.cpu_count() or 1))

    run = build_run(spec, FAMILIES[spec.architecture].open(run_dir), world, start.weights if start else None)
    model, optimizer, precision = run.model, run.optimizer, run.precision

    state = TrainState(world_size=world.size)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer)
        if state.data_rng is not None:
            run.sampler.load_state(state.data_rng)
        if precision.scaler is not None and state.scaler:
            precision.scaler.load_state_dict(state.scaler)
        state.world_size = world.size

    metrics = MetricsLog(run_dir / METRICS_FILE, resume_step=state.step if resume else None) if world.is_main else None
    reporter = Reporter(tr.max_steps, state.step, console) if world.is_main else Quiet()
    if world.is_main:
        _write_spec(spec, run_dir)
        reporter.print(_header(spec, run, state, resume))
        if hint:
            reporter.print(f"hint: {hint}")

    def on_checkpoint(current: TrainState) -> None:
        current.scaler = precision.scaler.state_dict() if precision.scaler is not None else None
        folder = save_checkpoint(run_dir, model, optimizer, current, tr.keep_last, world)
        if world.is_main:
            copy_file(folder / WEIGHTS_FILE, run_dir / WEIGHTS_FILE)

    def on_eval() -> None:
        if metrics is not None:
            plot_losses(metrics.records, run_dir / PLOT_FILE, f"{spec.name} ({tr.tokenizer} tokenizer)")

    if state.step >= tr.max_steps:
        reporter.print(f"run already at step {state.step} of {tr.max_steps}; raise training.max_steps to go on")
        return state
    return train_loop(run, state, reporter, metrics, on_checkpoint, on_eval)


def build_run(spec: ModelSpec, corpus: Corpus | PairCorpus, world: World, weights: Path | None = None) -> Run:
    """Model (seeded by training.seed, or loaded from ``weights``, wrapped for the world), optimizer,
    precision and sampler for ``spec``."""
    tr = spec.training
    model = build_model(spec, seed=tr.seed)
    if weights is not None:
        try:
            load_weights(model, weights)
        except WeightsError as err:
            raise TrainError(str(err)) from None
    model = model.to(world.device)
    model.set_gradient_checkpointing(tr.gradient_checkpointing)
    if tr.compile:
        model.compile()  # in place: parameter names (and so checkpoints) stay the same
    train_model = wrap_model(model, tr.distributed, world)
    return Run(
        spec=spec,
        model=model,
        train_model=train_model,
        optimizer=build_optimizer(model, tr.optimizer, world.device),  # after FSDP has sharded the model
        precision=resolve_precision(tr.precision, world.device),
        world=world,
        corpus=corpus,
        sampler=corpus.sampler(spec.train_seq_len, tr.seed),
        objective=FAMILIES[spec.architecture].objective,
        extra_eval=FAMILIES[spec.architecture].extra_eval,
    )


def _prepare(
    spec: ModelSpec, run_dir: Path, data: Path | None, resume: bool, force: bool, start: Start | None = None
) -> Path | None:
    """Rank 0: check everything, then write the run's files. Returns the checkpoint to resume from."""
    tr = spec.training
    family = FAMILIES[spec.architecture]
    if resume:
        source = family.read(data) if data is not None else None
        return check_resume(run_dir, spec, source)
    if data is None:
        raise TrainError(f"--data: required to start a run ({family.data})")
    check_new_run(run_dir, force)
    tokenized = family.tokenize(spec, data, start.tokenizer if start else None)
    tokenizer = tokenized.tokenizer
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if force:
            clear_run(run_dir)
        tokenized.write(run_dir)
        write_atomic(run_dir / TOKENIZER_FILE, tokenizer.save)
        if start is not None and start.tokenizer is not None:  # the folder's own tokenizer: its template and specials
            for name in TOKENIZER_EXTRAS:
                if (start.folder / name).is_file():
                    copy_file(start.folder / name, run_dir / name)
        _write_spec(spec, run_dir)
        record = {
            "format": 1,
            "nima_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": tokenized.source.as_dict(),
            "tokenizer": {"kind": tr.tokenizer, "vocab_size": tokenizer.vocab_size},
            **({"started_from": str(start.folder)} if start else {}),
            **tokenized.record,
        }
        write_json(run_dir / RUN_FILE, record)  # last: marks a complete setup
    except OSError as err:
        raise TrainError(f"{run_dir}: cannot write the run folder ({err.strerror or err})") from None
    return None


def _write_spec(spec: ModelSpec, run_dir: Path) -> None:
    """The resolved spec as ``nima.json``, as `nima build` writes it."""
    write_json(run_dir / SPEC_FILE, spec.model_dump(mode="json"))


def _header(spec: ModelSpec, run: Run, state: TrainState, resume: bool) -> str:
    tr = spec.training
    world = run.world
    global_batch = tr.batch_size * tr.grad_accum * world.size
    where = f"{world.device.type}" + (f" x {world.size} ({tr.distributed})" if world.distributed else "")
    if world.device.type == "cpu":
        where += f", {torch.get_num_threads()} thread(s)"
    action = f"resuming at step {state.step}" if resume else "training"
    # fsdp is asked for by name (ddp is the default): in one process it shards nothing, which a run
    # meant for torchrun but started without it would otherwise not show
    alone = ""
    if tr.distributed == "fsdp" and not world.distributed:
        alone = "\nnote: training.distributed is fsdp, which applies under torchrun; this is one process"
    return (
        f"{action} {spec.name}: {parameter_count(spec) / 1e6:.2f}M parameters, {tr.tokenizer} tokenizer, "
        f"{run.corpus.summary(global_batch, spec.train_seq_len)}, {where}, {run.precision.name}{alone}"
    )
