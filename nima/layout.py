"""The formats of Nima's folders, in one torch-free module: file and tensor names, the atomic
writers every folder is written with, and the record of special token ids.

Three kinds of folder share these names:

- a **model folder** (`nima build -o`, `nima train`): ``nima.json`` + ``model.safetensors``
  (+ ``tokenizer.json``); a run folder adds ``run.json``, ``data/``, ``checkpoints/``, metrics;
- a **bundle** (`nima export`): the ONNX graph(s), ``nima.json``, ``bundle.json`` (the manifest
  a runtime reads: `nima.manifest`), ``tokenizer.json``, a model card, and for decoders
  ``genai_config.json``;
- the tensor names inside the graphs, which follow ONNX Runtime GenAI and Optimum (shapes:
  ``nima/export/decoder/contract.py`` and ``nima/export/seq2seq/contract.py``).

Every file is written through a temporary sibling and renamed into place, so an interrupted
write leaves the previous file (or none), never half of one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# --- file names -------------------------------------------------------------------------------

SPEC_FILE = "nima.json"  # the resolved spec: model folders, runs and bundles
WEIGHTS_FILE = "model.safetensors"  # model folders and runs
TOKENIZER_FILE = "tokenizer.json"  # Hugging Face tokenizers format
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"  # Hugging Face: the chat template and special tokens
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # Hugging Face (transformers 5 writes the template here, not above)
# what travels with tokenizer.json from folder to folder: import, fine-tuning, export, export --hf
TOKENIZER_EXTRAS = (TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE)
RUN_FILE = "run.json"  # what a training run was started from; written last, it marks a complete setup
METRICS_FILE, PLOT_FILE = "metrics.jsonl", "loss.png"  # a run's losses, one JSON line per log step; their plot
DATA_DIR, CHECKPOINTS_DIR = "data", "checkpoints"  # a run's packed tokens; its checkpoints (step-NNNNNN/)
CARD_FILE = "README.md"  # a bundle's model card
MANIFEST_FILE = "bundle.json"  # a bundle's manifest (`nima.manifest`)
MODEL_FILE = "model.onnx"  # a decoder bundle's graph
ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"  # an encoder-decoder bundle's graphs
GENAI_CONFIG_FILE = "genai_config.json"  # onnxruntime-genai's description of a decoder bundle
SEQ2SEQ_FILE = "seq2seq.json"  # the manifest of encoder-decoder bundles written before bundle.json

# --- tensor names -----------------------------------------------------------------------------

INPUT_IDS, ATTENTION_MASK, POSITION_IDS, LOGITS = "input_ids", "attention_mask", "position_ids", "logits"
LOGITS_TO_KEEP = "logits_to_keep"  # optional (a default of 0 in the graph): the last positions whose logits are made
PAST_KEY, PAST_VALUE = "past_key_values.%d.key", "past_key_values.%d.value"
PRESENT_KEY, PRESENT_VALUE = "present.%d.key", "present.%d.value"
ENCODER_HIDDEN, ENCODER_ATTENTION_MASK = "encoder_hidden_states", "encoder_attention_mask"
CROSS_KEY, CROSS_VALUE = "cross_key_values.%d.key", "cross_key_values.%d.value"


def layer_names(patterns: Sequence[str], n_layers: int) -> list[str]:
    """``patterns`` filled in for each layer, layer by layer: past key 0, past value 0, past key 1, ..."""
    return [pattern % i for i in range(n_layers) for pattern in patterns]


# --- atomic writers ---------------------------------------------------------------------------


def share_folder(folder: Path) -> None:
    """Give a ``mkdtemp`` folder and the files in it the modes ``mkdir`` and ``open`` would.

    ``tempfile.mkdtemp`` (and safetensors) create owner-only entries; folders written through a
    temporary sibling and renamed into place should be as readable as any other.
    """
    umask = _umask()
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary sibling of ``path``, then rename it over ``path``.

    ``write`` is whatever makes the file: ``np.save``, a tokenizer's ``save``, a plot's ``savefig``.
    The temporary name is unique (two writers of one file do not share it) and keeps ``path``'s
    suffix, for writers that choose a format by it. The file gets the mode ``open`` would give it
    (safetensors, for one, writes owner-only files)."""
    import tempfile  # here, as in the functions below: a process that only decodes reads this module's names

    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON (and a final newline) to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically."""
    import shutil

    write_atomic(target, lambda tmp: shutil.copyfile(source, tmp))


class TargetAppeared(FileExistsError):
    """The target folder exists, and the writer was not allowed to replace one."""


@functools.cache
def host() -> str:
    """This machine, in staging folders' names: a process id means something on its own host only.
    (A function: ``hashlib`` loads OpenSSL, 3.6 MiB that a process which only decodes never needs.)"""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


@contextlib.contextmanager
def staged_folder(out: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it becomes ``out``, on error it is removed.

    ``replace``: an ``out`` that exists when the folder is done is swapped out and removed (the caller
    has checked it may be: an earlier bundle, under ``--force``); without it, an ``out`` that exists
    then — one that appeared while this was written, say by a second process — is left alone and
    `TargetAppeared` raised. The temporary folders are named ``.<out>.<pid>-<host>.<random>.partial``
    (``.old`` while an old ``out`` is swapped out), so one that a killed process left is provably
    ours and not in use: its process is gone from this host. Each new staging clears such leftovers
    of ``out`` first, putting back an old ``out`` that a kill between the two renames left aside.
    """
    import shutil
    import tempfile

    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale(parent, out.name)
    stem = f".{out.name}.{os.getpid()}-{host()}."
    tmp = Path(tempfile.mkdtemp(prefix=stem, suffix=".partial", dir=parent))
    try:
        yield tmp
        share_folder(tmp)
        if out.exists() or out.is_symlink():
            if not replace:
                raise TargetAppeared(f"{out}: exists (another process wrote it meanwhile?); not replaced")
            old = Path(tempfile.mkdtemp(prefix=stem, suffix=".old", dir=parent))
            os.replace(out, old / "previous")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale(parent: Path, name: str | None = None) -> list[Path]:
    """Remove the staging folders of ``name`` (None: of any name, for a folder that is all Nima's, such
    as ``checkpoints/``) in ``parent`` whose process no longer runs on this host; returns them. An
    ``.old`` one whose target is missing (a kill between the two renames) gives its folder back first."""
    import shutil

    removed = []
    for path in parent.glob(f".{glob_escape(name)}.*" if name is not None else ".*"):
        fields = path.name[1:].split(".")
        if len(fields) < 4 or fields[-1] not in ("partial", "old") or not path.is_dir():
            continue
        owner, target = fields[-3], ".".join(fields[:-3])
        if (name is not None and target != name) or not _abandoned(owner):
            continue
        previous = path / "previous"
        if fields[-1] == "old" and previous.is_dir() and not (parent / target).exists():
            os.replace(previous, parent / target)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters taken literally."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in text)


def _abandoned(owner: str) -> bool:
    """Whether ``<pid>-<host>`` names a process of this host that no longer runs (another host's: never)."""
    pid, _, machine = owner.partition("-")
    if machine != host() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):  # another user's process; no pid at all
        return False
    return False


# --- special token ids ------------------------------------------------------------------------

EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "[SEP]")
BOS_NAMES = ("<|startoftext|>", "<s>", "<bos>", "[CLS]")
PAD_NAMES = ("<pad>", "[PAD]")


@dataclass(frozen=True)
class TokenIds:
    """The special token ids a tokenizer, a training run, a bundle and a runtime agree on; None where
    there is none. Written under Hugging Face's key names (``eos_token_id``, ...)."""

    eos: int | None = None  # ends a sequence
    bos: int | None = None  # starts a text (decoders)
    pad: int | None = None  # fills batch rows; masked out
    decoder_start: int | None = None  # an encoder-decoder's first decoder input

    def as_dict(self) -> dict[str, int]:
        """The ids that are set, under their Hugging Face key names."""
        return {f"{f.name}_token_id": getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenIds:
        """Read `as_dict`'s form; a missing key is None, a value that is not an integer a ValueError."""
        values: dict[str, int | None] = {}
        for f in fields(cls):
            value = data.get(f"{f.name}_token_id")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name}_token_id: {value!r} is not a token id")
            values[f.name] = value
        return cls(**values)

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer | None) -> TokenIds:
        """The usual spellings of end, start and padding tokens looked up in ``tokenizer``."""
        if tokenizer is None:
            return cls()

        def first(names: Sequence[str]) -> int | None:
            for name in names:
                found = tokenizer.token_to_id(name)
                if found is not None:
                    return found
            return None

        return cls(eos=first(EOS_NAMES), bos=first(BOS_NAMES), pad=first(PAD_NAMES))

    def outside(self, vocab_size: int) -> tuple[str, int] | None:
        """The first id that is set and not below ``vocab_size``, as (key, id); None when all fit."""
        for key, value in self.as_dict().items():
            if not 0 <= value < vocab_size:
                return key, value
        return None
