"""Reading a Hugging Face model folder's weights: safetensors only, tensor by tensor.

A folder holds ``model.safetensors``, or shards listed by ``model.safetensors.index.json``.
Tensors are read lazily (`safetensors.safe_open`), one at a time, so an import holds about one
tensor of the source in memory besides what it writes. ``pytorch_model.bin`` is a pickle, which
can run code when loaded, so it is refused with the conversion to use instead.

Checkpoints saved from a model with a head (``LlamaForCausalLM``) prefix the body's names
(``model.layers.0...``); ones saved from the bare body (``LlamaModel``, GPT-2's own files) do not.
`Checkpoint.get` accepts the name with the body's prefix and finds it either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from nima.interop.hf.config import read_json_object
from nima.interop.hf.errors import ImportFailure

if TYPE_CHECKING:  # tensors come out as torch's (`safe_open(framework="pt")`); `nima info` reads no tensor
    import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.bin")


class Checkpoint:
    """The tensors of a model folder, read on demand; see the module docstring."""

    def __init__(self, folder: Path, body_prefix: str) -> None:
        self.folder = folder
        self.body_prefix = body_prefix  # "model.", "transformer.": what a headed model's names start with
        self._files = _tensor_files(folder)  # tensor name -> file
        self._handles: dict[Path, object] = {}

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the files' handles (their memory maps)."""
        for handle in self._handles.values():
            handle.__exit__(None, None, None)  # type: ignore[attr-defined]
        self._handles.clear()

    def _open(self, path: Path) -> object:
        if path not in self._handles:
            try:
                self._handles[path] = safe_open(str(path), framework="pt").__enter__()
            except (SafetensorError, OSError) as err:
                raise ImportFailure(f"{path}: not a readable safetensors file ({err})") from None
        return self._handles[path]

    @property
    def names(self) -> set[str]:
        return set(self._files)

    def resolve(self, name: str) -> str | None:
        """The stored name of ``name`` (given with the body prefix where the body has one), or None."""
        if name in self._files:
            return name
        if self.body_prefix and name.startswith(self.body_prefix) and name[len(self.body_prefix) :] in self._files:
            return name[len(self.body_prefix) :]
        return None

    def has(self, name: str) -> bool:
        return self.resolve(name) is not None

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name``; `ImportFailure` naming it when the folder lacks it."""
        stored = self.resolve(name)
        if stored is None:
            raise ImportFailure(f"{self.folder}: the checkpoint has no tensor {name!r}")
        path = self._files[stored]
        try:
            tensor = self._open(path).get_tensor(stored)  # type: ignore[attr-defined]
        except (SafetensorError, OSError) as err:  # an index naming a shard that lacks the tensor, say
            raise ImportFailure(f"{path}: cannot read tensor {stored!r} ({err})") from None
        if not tensor.is_floating_point():  # integers would be cast to weights of no meaning
            raise ImportFailure(f"{path}: tensor {stored!r} holds {tensor.dtype}; weights are floating point")
        return tensor

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The stored shape of ``name`` without reading its data; None when the folder lacks it."""
        stored = self.resolve(name)
        if stored is None:
            return None
        path = self._files[stored]
        try:
            return tuple(self._open(path).get_slice(stored).get_shape())  # type: ignore[attr-defined]
        except (SafetensorError, OSError) as err:
            raise ImportFailure(f"{path}: cannot read tensor {stored!r} ({err})") from None


def weights_problem(folder: Path) -> str | None:
    """Why ``folder`` has no weights Nima reads (only a pickle, or none), without opening them; None when
    it has a safetensors file or shard index (their contents are checked at import)."""
    if (folder / INDEX_FILE).is_file() or (folder / SINGLE_FILE).is_file():
        return None
    try:
        _tensor_files(folder)
    except ImportFailure as err:
        return str(err)
    return None


def _tensor_files(folder: Path) -> dict[str, Path]:
    """Every tensor name in the folder's safetensors files -> the file that holds it."""
    index, single = folder / INDEX_FILE, folder / SINGLE_FILE
    if index.is_file():
        try:
            weight_map = read_json_object(index)["weight_map"]
            files = {str(name): folder / str(file) for name, file in weight_map.items()}
        except ImportFailure:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ImportFailure(f"{index}: not a readable shard index ({err!r})") from None
        for path in set(files.values()):
            if path.parent != folder or not path.is_file():
                raise ImportFailure(f"{index}: names the shard {path.name!r}, which is not a file in {folder}")
        return files
    if single.is_file():
        try:
            with safe_open(str(single), framework="pt") as handle:
                return {name: single for name in handle.keys()}  # noqa: SIM118 - safe_open is no dict
        except (SafetensorError, OSError) as err:
            raise ImportFailure(f"{single}: not a readable safetensors file ({err})") from None
    pickled = [name for name in PICKLE_FILES if (folder / name).exists()]
    if pickled:
        raise ImportFailure(
            f"{folder / pickled[0]}: a pickled PyTorch checkpoint, which can run code when loaded, so Nima does "
            "not read it; convert it to safetensors first, where you trust it: "
            "transformers' AutoModel...from_pretrained(folder).save_pretrained(folder, safe_serialization=True)"
        )
    raise ImportFailure(f"{folder}: no {SINGLE_FILE} or {INDEX_FILE} here (a Hugging Face model folder has one)")
