"""Reading a Hugging Face ``config.json``: the keys an architecture row needs, with errors naming them.

Keys renamed across transformers versions are read in both spellings: RoPE's base and scaling
(``rope_theta`` and ``rope_scaling`` before transformers 5, ``rope_parameters`` since).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nima.interop.hf.errors import ImportFailure

CONFIG_FILE = "config.json"
_MISSING = object()


class HfConfig:
    """A parsed ``config.json``; `get` and `require` name the key in their errors."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @property
    def model_type(self) -> str:
        return str(self.require("model_type"))

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key, default)
        return default if value is None else value

    def require(self, key: str) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            raise ImportFailure(f"{self.path}: {key}: required, and missing")
        return value

    def integer(self, key: str, default: Any = _MISSING) -> int:
        value = self.require(key) if default is _MISSING else self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ImportFailure(f"{self.path}: {key}: expected a non-negative integer, got {value!r}")
        return value

    def number(self, key: str, default: Any = _MISSING) -> float:
        value = self.require(key) if default is _MISSING else self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ImportFailure(f"{self.path}: {key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ImportFailure(f"{self.path}: {key}: {str(value)[:20]}... is past a float's range") from None
        if not math.isfinite(number):
            raise ImportFailure(f"{self.path}: {key}: expected a finite number, got {value!r}")
        return number

    def refuse(self, key: str, why: str) -> ImportFailure:
        """The error for a config value Nima cannot express."""
        return ImportFailure(f"{self.path}: {key}: {why}")

    def rope(self) -> tuple[float, dict[str, Any] | None]:
        """RoPE's base and its scaling section (None: no scaling), from either spelling."""
        params = self.get("rope_parameters")
        if isinstance(params, dict):
            theta = params.get("rope_theta", self.get("rope_theta", 10000.0))
            if isinstance(theta, bool) or not isinstance(theta, int | float):
                raise self.refuse("rope_parameters.rope_theta", f"expected a number, got {theta!r}")
            kind = params.get("rope_type", params.get("type", "default"))
            return float(theta), (None if kind == "default" else {"rope_type": kind, **params})
        scaling = self.get("rope_scaling")
        theta = self.number("rope_theta", 10000.0)
        if isinstance(scaling, dict):
            kind = scaling.get("rope_type", scaling.get("type", "default"))
            return theta, (None if kind == "default" else {"rope_type": kind, **scaling})
        return theta, None

    def eos_ids(self) -> list[int]:
        """``eos_token_id`` as a list (configs give one id or several)."""
        value = self.get("eos_token_id")
        values = value if isinstance(value, list) else [] if value is None else [value]
        return [int(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]


MAX_JSON_BYTES = 64 << 20  # a config or shard index is kilobytes; past this it is not one


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; `ImportFailure` naming the file when it is not one (a FIFO or device
    instead of a file, over `MAX_JSON_BYTES`, nested past Python's recursion limit)."""
    try:
        if not path.is_file():
            raise ImportFailure(f"{path}: not a regular file")
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ImportFailure(f"{path}: {path.stat().st_size:,} bytes; not a model's JSON file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except ImportFailure:
        raise
    except RecursionError:
        raise ImportFailure(f"{path}: not readable JSON (nested too deeply)") from None
    except (OSError, ValueError) as err:
        raise ImportFailure(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ImportFailure(f"{path}: expected a JSON object")
    return data


def read_config(folder: Path) -> HfConfig:
    """``folder``'s ``config.json``; refuses a folder that is not a model folder or asks for custom code."""
    if not folder.is_dir():
        raise ImportFailure(f"{folder}: {'is not a folder' if folder.exists() else 'no such folder'}")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ImportFailure(f"{folder}: no {CONFIG_FILE} here (expected a Hugging Face model folder)")
    data = read_json_object(path)
    config = HfConfig(path, data)
    if data.get("auto_map") or data.get("trust_remote_code"):
        raise config.refuse(
            "auto_map",
            "this model needs its own Python code (trust_remote_code); Nima never runs code from a model "
            "folder, and imports only the architectures it implements",
        )
    return config
