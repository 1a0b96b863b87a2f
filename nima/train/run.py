"""`train`: what ``nima train`` calls. Checks the input, sets up the run folder, builds the parts, runs the loop.

Order matters for bad input: every check that can fail (run folder, data, tokenizer size,
data size, resume compatibility, checkpoint integrity) runs before the first byte is written.
Under torchrun, rank 0 alone prepares the folder and the packed data while the others wait,
and a failure there stops every rank (`main_first`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console

from nima import __version__
from nima.builders import build_model
from nima.builders.weights import SPEC_FILE, WEIGHTS_FILE
from nima.spec import ModelSpec, parameter_count
from nima.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from nima.train.data import Corpus, Source, check_sizes, encode_splits, open_corpus, read_text, split_text, write_corpus
from nima.train.distributed import World, main_first, setup_world, teardown_world, wrap_model
from nima.train.errors import PeerFailed, TrainError
from nima.train.loop import Run, train_loop
from nima.train.metrics import METRICS_FILE, PLOT_FILE, MetricsLog, plot_losses
from nima.train.objective import objective_for
from nima.train.optim import build_optimizer
from nima.train.pairs import (
    SPECIALS,
    PairCorpus,
    encode_pairs,
    is_pair_file,
    open_pairs,
    read_pairs,
    split_pairs,
    tokenizer_text,
    write_pairs,
)
from nima.train.precision import resolve_precision
from nima.train.progress import Quiet, Reporter
from nima.train.rundir import RUN_FILE, TOKENIZER_FILE, check_new_run, check_resume, clear_run
from nima.train.seq2seq_eval import exact_match
from nima.train.tokenizer import TextTokenizer, train_tokenizer


def train(
    spec: ModelSpec,
    run_dir: Path,
    data: Path | None = None,
    resume: bool = False,
    force: bool = False,
    console: Console | None = None,
) -> TrainState:
    """Train ``spec`` on ``data`` into ``run_dir`` (or continue the run there); returns the final state.

    Raises `TrainError` (one line, naming the file or field) for anything the user can fix.
    """
    world = setup_world()
    threads = torch.get_num_threads()
    try:
        return _train(spec, run_dir, data, resume, force, world, console or Console(stderr=True))
    except TrainError as err:
        if world.is_main or isinstance(err, PeerFailed):
            raise
        raise PeerFailed(str(err)) from None  # rank 0 reports the same problem
    finally:
        torch.set_num_threads(threads)  # training.cpu_threads applies to this call only
        teardown_world(world)


def _train(
    spec: ModelSpec, run_dir: Path, data: Path | None, resume: bool, force: bool, world: World, console: Console
) -> TrainState:
    tr = spec.training
    objective_for(spec.architecture)  # fail early for architectures without an objective
    resolve_precision(tr.precision, world.device)
    checkpoint = main_first(world, lambda: _prepare(spec, run_dir, data, resume, force))
    if resume and not world.is_main:
        checkpoint = check_resume(run_dir, spec, None)
    if world.device.type == "cpu" and tr.cpu_threads:
        torch.set_num_threads(tr.cpu_threads)

    run = build_run(spec, open_pairs(run_dir) if spec.is_encoder_decoder else open_corpus(run_dir), world)
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

    def on_checkpoint(current: TrainState) -> None:
        current.scaler = precision.scaler.state_dict() if precision.scaler is not None else None
        folder = save_checkpoint(run_dir, model, optimizer, current, tr.keep_last, world)
        if world.is_main:
            _copy_atomic(folder / WEIGHTS_FILE, run_dir / WEIGHTS_FILE)

    def on_eval() -> None:
        if metrics is not None:
            plot_losses(metrics.records, run_dir / PLOT_FILE, f"{spec.name} ({tr.tokenizer} tokenizer)")

    if state.step >= tr.max_steps:
        reporter.print(f"run already at step {state.step} of {tr.max_steps}; raise training.max_steps to go on")
        return state
    return train_loop(run, state, reporter, metrics, on_checkpoint, on_eval)


def build_run(spec: ModelSpec, corpus: Corpus | PairCorpus, world: World) -> Run:
    """Model (seeded by training.seed, wrapped for the world), optimizer, precision and sampler for ``spec``."""
    tr = spec.training
    model = build_model(spec, seed=tr.seed).to(world.device)
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
        objective=objective_for(spec.architecture),
        extra_eval=exact_match if spec.is_encoder_decoder else None,
    )


def _refuse_pairs(spec: ModelSpec, data: Path) -> None:
    """A decoder-only spec given a pair file is an error, not text to train on."""
    if not spec.is_encoder_decoder and data.is_file() and is_pair_file(data):
        raise TrainError(
            f"{data}: source/target pairs train an encoder-decoder, and this spec has architecture: decoder; "
            "pass a text file or a folder of .txt files"
        )


def _read_source(spec: ModelSpec, data: Path) -> Source:
    """The fingerprint of ``data``, after checking it is the kind of data ``spec`` trains on."""
    _refuse_pairs(spec, data)
    return read_pairs(data)[1] if spec.is_encoder_decoder else read_text(data)[1]


@dataclass
class _Tokenized:
    """Data read, checked and tokenized in memory; ``write`` packs it into a run folder."""

    tokenizer: TextTokenizer
    source: Source
    write: Callable[[Path], None]
    record: dict[str, object]  # what run.json says about the data


def _tokenize(spec: ModelSpec, data: Path) -> _Tokenized:
    """Read and tokenize ``data``: text windows for a decoder, pairs for an encoder-decoder. Writes nothing."""
    tr = spec.training
    if spec.is_encoder_decoder:
        pairs, source = read_pairs(data)
        tokenizer = train_tokenizer(tr.tokenizer, tokenizer_text(pairs), spec.vocab_size, SPECIALS)
        corpus = encode_pairs(tokenizer, split_pairs(pairs, tr.val_fraction), spec.vocab_size)
        record = {
            "pairs": {split: corpus.n_pairs(split) for split in ("train", "val")},
            "seq2seq": corpus.special.as_dict(),
        }
        return _Tokenized(tokenizer, source, lambda run_dir: write_pairs(run_dir, corpus, tr.tokenizer, source), record)
    _refuse_pairs(spec, data)
    text, source = read_text(data)
    tokenizer = train_tokenizer(tr.tokenizer, text, spec.vocab_size)
    encoded = encode_splits(tokenizer, split_text(text, tr.val_fraction))
    check_sizes(encoded, spec.train_seq_len, tr.batch_size, str(data))
    record = {"tokens": {name: len(ids) for name, ids in encoded.ids.items()}}
    return _Tokenized(
        tokenizer, source, lambda run_dir: write_corpus(run_dir, encoded, spec.vocab_size, tr.tokenizer, source), record
    )


def _prepare(spec: ModelSpec, run_dir: Path, data: Path | None, resume: bool, force: bool) -> Path | None:
    """Rank 0: check everything, then write the run's files. Returns the checkpoint to resume from."""
    tr = spec.training
    if resume:
        source = _read_source(spec, data) if data is not None else None
        return check_resume(run_dir, spec, source)
    if data is None:
        what = "a .tsv or .jsonl file of pairs" if spec.is_encoder_decoder else "a text file or a folder of .txt files"
        raise TrainError(f"--data: required to start a run ({what})")
    check_new_run(run_dir, force)
    tokenized = _tokenize(spec, data)
    tokenizer = tokenized.tokenizer
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if force:
            clear_run(run_dir)
        tokenized.write(run_dir)
        tmp = run_dir / f".{TOKENIZER_FILE}.tmp"
        tokenizer.save(tmp)
        os.replace(tmp, run_dir / TOKENIZER_FILE)
        _write_spec(spec, run_dir)
        record = {
            "format": 1,
            "nima_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": tokenized.source.as_dict(),
            "tokenizer": {"kind": tr.tokenizer, "vocab_size": tokenizer.vocab_size},
            **tokenized.record,
        }
        _write_text(run_dir / RUN_FILE, json.dumps(record, indent=2) + "\n")  # last: marks a complete setup
    except OSError as err:
        raise TrainError(f"{run_dir}: cannot write the run folder ({err.strerror or err})") from None
    return None


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_spec(spec: ModelSpec, run_dir: Path) -> None:
    """The resolved spec as ``nima.json``, as `nima build` writes it."""
    _write_text(run_dir / SPEC_FILE, json.dumps(spec.model_dump(mode="json"), indent=2) + "\n")


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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
