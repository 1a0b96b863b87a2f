"""Writing and reading a model folder: ``nima.json`` (resolved spec) + ``model.safetensors``.

safetensors rather than torch.save: it loads without unpickling arbitrary objects and
deduplicates tied weights. Files are written to a temporary folder beside the target and
moved into place, so an interrupted write never leaves a half-written model.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from nima.layout import SPEC_FILE, WEIGHTS_FILE, staged_folder, write_atomic, write_json
from nima.spec import ModelSpec


class WeightsError(ValueError):
    """A weights file is missing, corrupt, or does not match the spec."""


def save_build(model: nn.Module, spec: ModelSpec, out_dir: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``nima.json`` and ``model.safetensors`` into ``out_dir`` atomically (per file)."""
    out_dir = Path(out_dir)
    if out_dir.exists():  # other files in the folder (a tokenizer) stay; each of the two is replaced whole
        write_json(out_dir / SPEC_FILE, spec.model_dump(mode="json"))
        write_atomic(out_dir / WEIGHTS_FILE, lambda tmp: _save(model, tmp, metadata))
        return out_dir
    with staged_folder(out_dir) as tmp:
        write_json(tmp / SPEC_FILE, spec.model_dump(mode="json"))
        _save(model, tmp / WEIGHTS_FILE, metadata)
    return out_dir


def _save(model: nn.Module, path: Path, metadata: dict[str, str] | None) -> None:
    save_model(model, str(path), metadata={"format": "pt", **(metadata or {})})


FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}  # safetensors' names


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``model.safetensors`` into ``model``; every mismatch is one `WeightsError`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), "pt") as stored:  # the header only: integers would be cast to weights
            for name in stored.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                kind = stored.get_slice(name).get_dtype()
                if kind not in FLOAT_DTYPES:
                    raise WeightsError(f"{path}: tensor {name!r} holds {kind}; weights are floating point")
        missing, unexpected = load_model(model, str(path), strict=False)
    except SafetensorError as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
    except RuntimeError as err:  # shape mismatches
        first = str(err).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[-1] if first else "")
        raise WeightsError(f"{path}: weights do not match the spec ({detail})") from None
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(sorted(missing)[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(sorted(unexpected)[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise WeightsError(f"{path}: weights do not match the spec ({'; '.join(parts)})")
    return model
