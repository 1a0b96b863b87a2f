"""A bundle's manifest, ``bundle.json``: what a runtime reads besides the spec and the tokenizer.

Every bundle has one, whatever its family: which graph file plays which role (``decoder``;
``encoder`` too for an encoder-decoder), the special token ids generation needs, how the graphs
were made (dtype, quantization, target) and whether the decoder graph takes one preallocated
buffer as past and present. The token ids sit at the top level under Hugging Face's key names
(``eos_token_id``, ...), as in a ``config.json``; each graph has a section named after its role
(``"decoder": {"filename": ..., "inputs": ..., "outputs": ...}``), the layout onnxruntime-genai's
config uses, and the sizes a loop needs sit beside them (``io``: for other readers; Nima's
runtime takes the tensor names from `nima.layout`).

Bundles written before the manifest existed are read too (`legacy_manifest`). Torch-free: the
exporter writes it, the runtime reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nima.layout import GENAI_CONFIG_FILE, MANIFEST_FILE, MODEL_FILE, SEQ2SEQ_FILE, TokenIds

FORMAT = 1
COMMON_KEYS = frozenset(
    {"format", "nima_version", "architecture", "dtype", "quantize", "target", "share_buffer", "parity"}
    | {f"{f.name}_token_id" for f in fields(TokenIds)}
)


class ManifestError(ValueError):
    """A bundle's manifest is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Manifest:
    """The contents of ``bundle.json``; see the module docstring."""

    architecture: str
    graphs: dict[str, str]  # role ("decoder", "encoder") -> file name inside the bundle
    token_ids: TokenIds = TokenIds()
    share_buffer: bool = False  # the decoder graph also runs with one buffer as past and present
    dtype: str = "fp32"
    quantize: str | None = None
    target: str = "portable"
    nima_version: str = ""
    io: dict[str, Any] = field(default_factory=dict)  # each role's tensor names, sizes (see the module docstring)
    parity: str | None = None  # the export's check against PyTorch, in one line; None: exported unchecked

    def to_dict(self) -> dict[str, Any]:
        sections = {role: {"filename": name, **self.io.get(role, {})} for role, name in self.graphs.items()}
        return {
            "format": FORMAT,
            "nima_version": self.nima_version,
            "architecture": self.architecture,
            "dtype": self.dtype,
            "quantize": self.quantize,
            "target": self.target,
            "share_buffer": self.share_buffer,
            "parity": self.parity,
            **self.token_ids.as_dict(),
            **{key: value for key, value in self.io.items() if key not in sections},
            **sections,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse `to_dict`'s form; `ValueError`/`KeyError`/`TypeError` say what is wrong."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}: this Nima reads format {FORMAT}")
        graphs = {role: section["filename"] for role, section in data.items() if isinstance(section, dict)}
        if not all(isinstance(name, str) for name in graphs.values()):
            raise TypeError("a graph's filename is not a string")
        quantize = data.get("quantize")
        return cls(
            architecture=str(data["architecture"]),
            graphs=dict(graphs),
            token_ids=TokenIds.from_dict(data),
            share_buffer=data.get("share_buffer") is True,
            dtype=str(data.get("dtype", "fp32")),
            quantize=None if quantize is None else str(quantize),
            target=str(data.get("target", "portable")),
            nima_version=str(data.get("nima_version", "")),
            parity=None if data.get("parity") is None else str(data["parity"]),
            io={key: value for key, value in data.items() if key not in COMMON_KEYS},
        )


def read_manifest(folder: Path, architecture: str) -> Manifest:
    """The manifest of the bundle ``folder`` whose spec says ``architecture``; `ManifestError` naming
    the file when it is unreadable, names a graph outside the folder, or disagrees with the spec."""
    path = folder / MANIFEST_FILE
    if not path.exists() and not path.is_symlink():
        manifest = legacy_manifest(folder, architecture)
    else:
        try:
            manifest = Manifest.from_dict(read_json(path))
        except ManifestError:
            raise
        except OSError as err:
            raise ManifestError(f"{path}: cannot read it ({err.strerror or err})") from None
        except (ValueError, KeyError, TypeError) as err:
            raise ManifestError(f"{path}: not a valid bundle manifest ({err!r})") from None
    if manifest.architecture != architecture:
        raise ManifestError(f"{path}: architecture {manifest.architecture!r}, the bundle's nima.json {architecture!r}")
    for role, name in manifest.graphs.items():
        if not name or Path(name).name != name or name in (".", ".."):
            raise ManifestError(f"{path}: graph {role!r} is {name!r}, not a file name inside the bundle")
    return manifest


MAX_MANIFEST_BYTES = 2**20  # a manifest is a page of JSON


def read_json(path: Path) -> Any:
    """A bundle's small JSON file, parsed: `ManifestError` naming it when it is not a regular file (a FIFO
    would block the reader, a device never end), is over `MAX_MANIFEST_BYTES` or nests past Python's
    recursion limit; `OSError`, `ValueError` for the caller's own message otherwise."""
    if not path.is_file():
        raise ManifestError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: {size:,} bytes; a bundle's description is at most 1 MiB")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ManifestError(f"{path}: not a valid bundle manifest (nested too deeply)") from None


def legacy_manifest(folder: Path, architecture: str) -> Manifest:
    """The manifest of a bundle written before ``bundle.json``: a decoder's ``model.onnx`` (its shared
    buffer flag in ``genai_config.json``, token ids from the tokenizer at load), or an encoder-decoder's
    ``seq2seq.json``."""
    if architecture != "encoder-decoder":
        return Manifest(architecture, {"decoder": MODEL_FILE}, share_buffer=_genai_shares_buffer(folder))
    path = folder / SEQ2SEQ_FILE
    try:
        config = read_json(path)
        graphs = {"encoder": str(config["encoder"]["filename"]), "decoder": str(config["decoder"]["filename"])}
        ids = TokenIds(
            eos=int(config["eos_token_id"]),
            pad=int(config["pad_token_id"]),
            decoder_start=int(config["decoder_start_token_id"]),
        )
    except ManifestError:
        raise
    except OSError as err:
        raise ManifestError(f"{path}: cannot read it ({err.strerror or err})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ManifestError(f"{path}: not a valid encoder-decoder bundle description ({err!r})") from None
    return Manifest(architecture, graphs, ids)


def _genai_shares_buffer(folder: Path) -> bool:
    """Whether an old decoder bundle's ``genai_config.json`` marks the graph for a shared buffer."""
    path = folder / GENAI_CONFIG_FILE
    if not path.is_file():
        return False
    try:
        config = read_json(path)
        return config["search"].get("past_present_share_buffer") is True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # ManifestError too: a ValueError
        return False


def with_token_ids(manifest: Manifest, ids: TokenIds) -> Manifest:
    """``manifest`` with ``ids`` filling the token ids it does not set (a legacy decoder's from its tokenizer)."""
    own = manifest.token_ids
    merged = TokenIds(
        **{key: getattr(own, key) if getattr(own, key) is not None else getattr(ids, key) for key in vars(own)}
    )
    return replace(manifest, token_ids=merged)
