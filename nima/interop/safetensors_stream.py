"""Writing a safetensors file one tensor at a time.

`safetensors.torch.save_file` takes every tensor at once, so a model converted tensor by tensor
(`nima import`) would have to be in memory whole before anything could be written. The format is
simple enough to write as a stream (an 8-byte little-endian header length, a JSON header of each
tensor's dtype, shape and byte range, then the bytes), so this writer keeps one tensor in memory
at a time: the header is written first from the shapes, which are known before any tensor is
read. Files it writes are read by safetensors' own loaders (the tests load them with them).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def write_safetensors(
    path: Path,
    shapes: dict[str, tuple[int, ...]],
    dtype: torch.dtype,
    tensors: Iterable[tuple[str, torch.Tensor]],
    metadata: dict[str, str] | None = None,
    on_tensor: Callable[[str], None] = lambda _: None,
) -> None:
    """Write ``tensors`` (name, tensor), which must come in sorted name order with the ``shapes`` given,
    to ``path`` in ``dtype``; a tensor whose name or shape differs from the plan is a `ValueError`."""
    names = sorted(shapes)
    size = torch.empty((), dtype=dtype).element_size()
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name in names:
        length = size * _count(shapes[name])
        header[name] = {"dtype": DTYPES[dtype], "shape": list(shapes[name]), "data_offsets": [offset, offset + length]}
        offset += length
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the tensors' bytes start 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        written = 0
        for name, tensor in tensors:
            if written >= len(names) or name != names[written]:
                raise ValueError(f"tensor {name!r} is out of the planned order")
            if tuple(tensor.shape) != tuple(shapes[name]):
                raise ValueError(f"tensor {name!r} has shape {tuple(tensor.shape)}, planned {shapes[name]}")
            _write_bytes(f, tensor.to(dtype))
            written += 1
            on_tensor(name)
        if written != len(names):
            raise ValueError(f"{len(names) - written} planned tensors were not given, from {names[written]!r}")


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def _write_bytes(f: BinaryIO, tensor: torch.Tensor) -> None:
    """The tensor's bytes, little-endian, in C order (what safetensors stores)."""
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.numel():
        f.write(memoryview(flat.view(torch.uint8).numpy()))  # the tensor's own memory: no copy
