"""The run folder: what it holds, when it may be (over)written, and whether a resume matches it.

A run folder is also a model folder, the same layout `nima build -o` writes (``nima.json``,
``model.safetensors``) plus ``tokenizer.json``, so `nima export` can read it directly. Next to
those: ``run.json`` (what the run was started from), ``data/`` (packed tokens),
``checkpoints/``, ``metrics.jsonl`` and ``loss.png``.

All checks here only read; they run before anything is written, so bad input leaves the
folder as it was. A folder that already holds a run is never reused without ``--resume``
(continue it) or ``--force`` (remove the previous run's files, and only those).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nima.layout import (
    CHECKPOINTS_DIR,
    DATA_DIR,
    METRICS_FILE,
    PLOT_FILE,
    RUN_FILE,
    SPEC_FILE,
    TOKENIZER_EXTRAS,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
)
from nima.spec import ModelSpec, SpecError, spec_from_dict
from nima.train.checkpoint import checkpoint_steps
from nima.train.data import Source
from nima.train.errors import TrainError
from nima.train.tokenizer import TextTokenizer

OWNED = (
    RUN_FILE,
    SPEC_FILE,
    WEIGHTS_FILE,
    TOKENIZER_FILE,
    *TOKENIZER_EXTRAS,
    METRICS_FILE,
    PLOT_FILE,
    DATA_DIR,
    CHECKPOINTS_DIR,
)
# what a build or an import leaves, without run.json
MODEL_FOLDER = (SPEC_FILE, WEIGHTS_FILE, TOKENIZER_FILE, *TOKENIZER_EXTRAS)

# Fields a resumed run may change: how long to train and how often to look, not what is trained.
RESUMABLE = {
    "training.max_steps",
    "training.log_every",
    "training.eval_every",
    "training.eval_batches",
    "training.checkpoint_every",
    "training.keep_last",
    "training.compile",
    "training.gradient_checkpointing",
    "training.cpu_threads",
}


def folder_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a folder name of its own under ``runs/`` (a path separator, a control
    character, ``.`` or ``..``); None when it can. Checked where a name becomes a path, so a name that
    is fine in a bundle but not as a folder stays readable there."""
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if name.strip() in (".", ".."):
        return "names the folder itself or the one above"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "holds a control character"
    return None


def check_writable(run_dir: Path) -> None:
    """``run_dir`` is, or can be created as, a writable folder."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"{run_dir}: exists and is not a folder")
    probe = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("."))
    if not probe.is_dir():
        raise TrainError(f"{run_dir}: cannot create the run folder ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise TrainError(f"{run_dir}: run folder is not writable ({probe})")


def check_new_run(run_dir: Path, force: bool) -> None:
    """A new run may start in ``run_dir``: it holds no run or model, or ``force`` allows replacing it.

    ``--force`` removes only what a run provably wrote: the names a run writes (`OWNED`) in a folder
    that holds a run (its ``run.json``), or a model folder's files (`nima build`, `nima import`) in one
    that holds nothing else. A folder that holds a run's names without ``run.json`` (a ``data/`` or
    ``checkpoints/`` of the user's, say) is refused, whatever ``--force`` says."""
    check_writable(run_dir)
    graphs = sorted(p.name for p in run_dir.glob("*.onnx")) if run_dir.is_dir() else []
    if graphs:  # --force removes a run's files only: the bundle's graphs would stay beside the new run
        raise TrainError(f"{run_dir}: holds an exported bundle ({graphs[0]}); train into another folder")
    taken = [name for name in OWNED if (run_dir / name).exists()] if run_dir.is_dir() else []
    if taken and not force:
        raise TrainError(
            f"{run_dir}: already holds a run or model ({', '.join(taken[:3])}); "
            "pass --resume to continue it or --force to start over"
        )
    if taken and not (run_dir / RUN_FILE).is_file():
        # no run here: only a folder of a model folder's files and nothing else may be replaced
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in MODEL_FOLDER)
        if foreign:
            raise TrainError(
                f"{run_dir}: holds {foreign[0]} and no {RUN_FILE}: not a run, nor only a model folder, so --force "
                "will not delete anything there; train into another folder"
            )


def clear_run(run_dir: Path) -> None:
    """Remove the files a previous run (or build) left in ``run_dir``; other files stay."""
    for name in OWNED:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainError(f"{path}: not found; the folder holds no resumable run (start one without --resume)") from None
    except (OSError, ValueError) as err:
        raise TrainError(f"{path}: unreadable ({err}); start a new run with --force") from None
    if not isinstance(data, dict):
        raise TrainError(f"{path}: expected a JSON object; start a new run with --force")
    return data


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def spec_changes(saved: dict[str, Any], spec: ModelSpec) -> list[str]:
    """Dotted fields where ``spec`` differs from the run's saved spec, other than the `RESUMABLE` ones.

    The saved spec is read through today's schema first, so a field added since the run was started
    (with a default that changes nothing) is no difference; a saved spec today's schema refuses is
    compared as it was written."""
    with contextlib.suppress(SpecError):
        saved = spec_from_dict(saved).model_dump(mode="json")
    old, new = _flatten(saved), _flatten(spec.model_dump(mode="json"))
    fields = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return [
        f"{k}: {old.get(k)!r} in the run, {new.get(k)!r} now"
        for k in fields
        if k not in RESUMABLE and not k.startswith("generation.")
    ]


def check_resume(run_dir: Path, spec: ModelSpec, source: Source | None) -> Path:
    """The latest checkpoint of the run in ``run_dir``, after checking that ``spec`` (and data) match it."""
    if not run_dir.is_dir():
        raise TrainError(f"{run_dir}: no run folder to resume (start one without --resume)")
    record = _read_json(run_dir / RUN_FILE)
    changes = spec_changes(_read_json(run_dir / SPEC_FILE), spec)
    if changes:
        more = f" (and {len(changes) - 2} more)" if len(changes) > 2 else ""
        raise TrainError(
            f"{run_dir / SPEC_FILE}: the run was started with another spec ({'; '.join(changes[:2])}{more}); "
            "resume with the run's spec or start a new run with --force"
        )
    if source is not None and [list(f) for f in source.files] != record.get("data", {}).get("files"):
        raise TrainError(
            f"{source.path}: is not the data this run was started with (see {run_dir / RUN_FILE}); "
            "resume without --data or start a new run with --force"
        )
    found = checkpoint_steps(run_dir)
    if not found:
        raise TrainError(f"{run_dir / CHECKPOINTS_DIR}: no checkpoint to resume from; start over with --force")
    # the packed data does not need it, but the run's export and generation do: a damaged one would only
    # be found after training
    TextTokenizer.load(spec.training.tokenizer, run_dir / TOKENIZER_FILE)
    check_writable(run_dir)
    # a resume writes new checkpoints and appends to the metrics: finding out after training would
    # leave the run half-updated (new metrics and weights, no checkpoint to resume them from)
    for path in (run_dir / CHECKPOINTS_DIR, run_dir / METRICS_FILE):
        if path.exists() and not _can_write(path):
            raise TrainError(f"{path}: is not writable, and resuming writes to it")
    return found[-1][1]


def _can_write(path: Path) -> bool:
    """Try it: a file created and removed in a folder, a file opened for appending (both left as
    they were, times included). Permission bits alone do not tell, e.g. for root, a read-only
    mount or an immutable file."""
    try:
        if path.is_dir():
            times = path.stat()
            handle, name = tempfile.mkstemp(dir=path, prefix=".nima-probe-")
            os.close(handle)
            os.unlink(name)
            os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))  # as it was
        else:
            with path.open("ab"):
                pass
    except OSError:
        return False
    return True
