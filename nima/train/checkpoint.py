"""Training checkpoints that load without unpickling, written atomically, the last few kept.

A checkpoint is a folder ``checkpoints/step-000500/`` holding

- ``model.safetensors``: the weights (tied weights once), the same file a model folder has;
- ``optimizer.safetensors``: AdamW's moments and step per parameter (``state/<param>/<key>``)
  and the data generator's state (``rng/data``, a uint8 tensor);
- ``trainer.json``: step, tokens seen, elapsed time, optimizer hyper-parameters, loss-scaler
  state, and the SHA-256 of both tensor files, so a truncated or altered file is caught.

It is written into a hidden temporary folder and renamed into place, so a crash leaves either
the previous checkpoints or the new one, never half of it; any ``step-*`` folder is complete.
State is gathered with `torch.distributed.checkpoint.state_dict`, which gives full, CPU,
name-keyed tensors for a plain model, DDP and FSDP alike; only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from nima.layout import CHECKPOINTS_DIR, WEIGHTS_FILE, remove_stale, staged_folder
from nima.train.distributed import World, barrier
from nima.train.errors import TrainError

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer.json"
FORMAT = 1
_NAME = re.compile(r"step-(\d+)")


@dataclass
class TrainState:
    """The scalars of a run besides weights and optimizer moments."""

    step: int = 0  # optimizer steps done
    tokens: int = 0  # training tokens consumed, all ranks together
    elapsed_s: float = 0.0  # training wall time so far
    world_size: int = 1
    scaler: dict[str, Any] | None = None  # GradScaler.state_dict() (fp16 only)
    data_rng: torch.Tensor | None = field(default=None, repr=False)  # uint8 generator state


def checkpoint_steps(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    folder = run_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)) and p.is_dir()]
    return sorted(found)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _tied_aliases(model: nn.Module) -> set[str]:
    """Names under which an already-named parameter appears again (a head tied to the embedding)."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return every - {name for name, _ in model.named_parameters()}


def save_checkpoint(
    run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState, keep_last: int, world: World
) -> Path:
    """Write ``checkpoints/step-NNNNNN`` (a collective call: every rank must call it) and prune old ones."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
    final = run_dir / CHECKPOINTS_DIR / f"step-{state.step:06d}"
    if world.is_main:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(final.parent)  # what a killed run left while writing any step (checkpoints/ is all ours)
        with staged_folder(final, replace=True) as tmp:  # replaces a checkpoint of the same step whole
            aliases = _tied_aliases(model)
            weights = {k: v.contiguous() for k, v in model_sd.items() if k not in aliases}
            save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "step": str(state.step)})
            tensors = {
                f"state/{name}/{key}": value.contiguous()
                for name, values in optim_sd["state"].items()
                for key, value in values.items()
            }
            if state.data_rng is not None:
                tensors["rng/data"] = state.data_rng
            save_file(tensors, str(tmp / OPTIMIZER_FILE), metadata={"format": "pt"})
            record = {k: v for k, v in asdict(state).items() if k != "data_rng"}
            record.update(
                format=FORMAT,
                param_groups=optim_sd["param_groups"],
                sha256={name: _sha256(tmp / name) for name in (WEIGHTS_FILE, OPTIMIZER_FILE)},
            )
            (tmp / STATE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        for _, old in checkpoint_steps(run_dir)[:-keep_last]:
            _remove(old)
    barrier(world)
    return final


def _remove(folder: Path) -> None:
    """Rename first, so an interrupted delete never leaves a partial ``step-*`` folder behind."""
    doomed = folder.with_name(f".{folder.name}.deleting")
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def read_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """trainer.json, the weights and the optimizer tensors of ``folder``, verified against their SHA-256."""
    state_path = folder / STATE_FILE
    try:
        record = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TrainError(
            f"{state_path}: unreadable checkpoint state ({err}); delete {folder} to resume from an earlier one"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("sha256"), dict):
        raise TrainError(
            f"{state_path}: not a nima checkpoint (format {FORMAT}); delete {folder} to resume from an earlier one"
        )
    _check_record(record, state_path, folder)
    loaded = []
    for name in (WEIGHTS_FILE, OPTIMIZER_FILE):
        path = folder / name
        try:
            if _sha256(path) != record["sha256"].get(name):
                raise TrainError(
                    f"{path}: corrupt checkpoint file (SHA-256 mismatch); delete {folder} to resume from an earlier one"
                )
            loaded.append(load_file(str(path)))
        except (OSError, SafetensorError) as err:
            raise TrainError(
                f"{path}: unreadable checkpoint file ({err}); delete {folder} to resume from an earlier one"
            ) from None
    return record, loaded[0], loaded[1]


def _check_record(record: dict[str, Any], state_path: Path, folder: Path) -> None:
    """The trainer.json fields a resume reads, with their types and ranges (the SHA-256 sums cover the
    tensor files, not this one); a bad field is a `TrainError` naming it."""
    problem = None
    for name, least in (("step", 0), ("tokens", 0), ("world_size", 1)):
        if problem is None and not _int_at_least(record.get(name), least):
            problem = f"{name} must be an integer >= {least}"
    elapsed = record.get("elapsed_s")
    if problem is None and (isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or elapsed < 0):
        problem = "elapsed_s must be a number >= 0"
    groups = record.get("param_groups")
    if problem is None and (not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups)):
        problem = "param_groups must be a list of objects"
    if problem is None and folder.name.startswith("step-") and folder.name != f"step-{record['step']:06d}":
        problem = f"step {record['step']} does not match the folder's name"
    if problem is not None:
        raise TrainError(f"{state_path}: {problem}; delete {folder} to resume from an earlier one")


def _int_at_least(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    """Restore weights and optimizer state from ``folder`` into (possibly wrapped) ``model``; every rank calls it."""
    record, weights, tensors = read_checkpoint(folder)
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("state/"):
            name, _, slot = key[len("state/") :].rpartition("/")
            state.setdefault(name, {})[slot] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in record["param_groups"]]
    try:
        set_state_dict(
            model,
            optimizer,
            model_state_dict=weights,
            optim_state_dict={"state": state, "param_groups": groups},
            options=StateDictOptions(full_state_dict=True),
        )
    except (RuntimeError, KeyError, ValueError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainError(f"{folder}: checkpoint does not match the model ({detail})") from None
    return TrainState(
        step=int(record["step"]),
        tokens=int(record["tokens"]),
        elapsed_s=float(record["elapsed_s"]),
        world_size=int(record["world_size"]),
        scaler=record.get("scaler"),
        data_rng=tensors.get("rng/data"),
    )
