"""`export_hf`: a Nima model folder -> a Hugging Face folder that transformers loads (`nima export --hf`).

For each architecture in `ARCHITECTURES` order, the row writes the nearest config of its type, and
the spec exports to the first type whose config imports back to the same spec (architecture,
sizes and variants; names, training and generation settings aside). So nothing is written that
transformers would compute differently: where no type fits, the closest one's differences are
the reasons, one line per spec field. The weights go the import's way backwards through the
same maps (`layouts.Layout.give`), one tensor at a time; the folder gets ``config.json``,
``model.safetensors``, ``generation_config.json`` and the tokenizer files the model folder has.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from nima import __version__
from nima.builders import build_model
from nima.interop.hf.architectures import ARCHITECTURES, HfArchitecture
from nima.interop.hf.config import CONFIG_FILE, HfConfig
from nima.interop.hf.errors import ImportFailure
from nima.interop.hf.spec_of import GENERATION_CONFIG_FILE, GENERATION_KEYS
from nima.interop.safetensors_stream import write_safetensors
from nima.layout import (
    SPEC_FILE,
    TOKENIZER_EXTRAS,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    copy_file,
    staged_folder,
    write_json,
)
from nima.spec import ModelSpec, SpecError, load_resolved_spec, spec_from_dict

HF_WEIGHTS_FILE = "model.safetensors"
CANNOT_HOLD = "the spec does not fit a"
# what the model computes; the rest (name, training, generation, init, dropout, kernel choice) does not change it
IGNORED_FIELDS = ("name", "spec_version", "training", "generation", "init", "dropout", "attention.backend")


class ExportHfError(ValueError):
    """The spec cannot be written as a transformers model; one line per reason, naming the spec field."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


@dataclass(frozen=True)
class HfExportResult:
    out: Path
    model_type: str
    files: list[str]


def choose(spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    """The first model type whose config gives ``spec`` back, and that config; `ExportHfError` listing the
    closest type's differences when none does."""
    tried: list[tuple[str, list[str]]] = []
    for model_type, row in ARCHITECTURES.items():
        config = row.config(spec, model_type)
        reasons = differences(spec, row, config, model_type)
        if not reasons:
            return model_type, config
        tried.append((model_type, reasons))
    # the closest: a type whose config holds the spec at all, with the fewest differing fields
    model_type, reasons = min(tried, key=lambda t: (t[1][0].startswith(CANNOT_HOLD), len(t[1])))
    raise ExportHfError([f"{reason} (the closest transformers model, {model_type}, differs)" for reason in reasons])


def differences(spec: ModelSpec, row: HfArchitecture, config: dict[str, Any], model_type: str) -> list[str]:
    """The spec fields that importing ``config`` would give otherwise, as 'field: ours vs theirs' lines."""
    try:
        back = spec_from_dict({**row.spec(HfConfig(Path(CONFIG_FILE), config)), "name": spec.name})
    except (ImportFailure, SpecError) as err:
        return [f"{CANNOT_HOLD} {model_type} config ({str(err).splitlines()[0]})"]
    ours, theirs = _flat(_canonical(spec)), _flat(_canonical(back))
    keys = sorted(key for key in ours.keys() | theirs.keys() if not key.startswith(IGNORED_FIELDS))
    differ = [key for key in keys if ours.get(key) != theirs.get(key)]
    # where a section's kind differs, fields only one of the kinds has are not differences of their own
    # (ALiBi has no theta); fields both kinds have (a norm's placement, eps) still are
    other_kinds = tuple(key.removesuffix("kind") for key in differ if key.endswith(".kind"))
    differ = [key for key in differ if not key.startswith(other_kinds) or (key in ours and key in theirs)]
    return [f"{key}: {ours.get(key)!r}, {model_type} has {theirs.get(key)!r}" for key in differ]


def _canonical(spec: ModelSpec) -> dict[str, Any]:
    """The spec's fields with what says the same thing twice said once: q/k/v biases equal to the other
    biases, and a head size equal to d_model / n_heads, are the defaults' (None)."""
    data = spec.model_dump(mode="json")
    attention = data["attention"]
    if attention.get("qkv_bias") == data["bias"]:
        attention["qkv_bias"] = None
    if attention.get("head_dim") is not None and attention["head_dim"] * attention["n_heads"] == data["d_model"]:
        attention["head_dim"] = None
    return data


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def export_hf(source: Path, out: Path, replace: bool = False) -> HfExportResult:
    """Write the model folder ``source`` as a transformers folder ``out`` (which the caller has checked may be
    written; ``replace``: an earlier one there may be replaced); `ExportHfError` before anything is written
    when the folder is unreadable or no transformers model computes the same."""
    try:
        return _export_hf(source, out, replace)
    except SpecError as err:
        raise ExportHfError([str(p) for p in err.problems]) from None
    except SafetensorError as err:
        raise ExportHfError([f"{source / WEIGHTS_FILE}: not a readable safetensors file ({err})"]) from None


def _export_hf(source: Path, out: Path, replace: bool) -> HfExportResult:
    spec = load_resolved_spec(source / SPEC_FILE)
    model_type, config = choose(spec)
    row = ARCHITECTURES[model_type]
    weights = source / WEIGHTS_FILE
    with safe_open(str(weights), framework="pt") as stored:
        names = set(stored.keys())  # noqa: SIM118 - safe_open is no dict
        plan = _plan(spec, row, names, weights)
        dtype = stored.get_tensor(next(iter(names))).dtype
        shapes = {name: tuple(_give(parts, spec, stored, meta=True).shape) for name, parts in plan.items()}
        with staged_folder(out, replace=replace) as tmp:
            write_json(tmp / CONFIG_FILE, {**config, "torch_dtype": str(dtype).removeprefix("torch."), **_ids(spec)})
            write_json(tmp / GENERATION_CONFIG_FILE, _generation(spec))
            write_safetensors(
                tmp / HF_WEIGHTS_FILE,
                shapes,
                dtype,
                ((name, _give(parts, spec, stored)) for name, parts in plan.items()),
                metadata={"format": "pt", "source": f"Nima {__version__}"},
            )
            for name in (TOKENIZER_FILE, *TOKENIZER_EXTRAS):
                if (source / name).is_file():
                    copy_file(source / name, tmp / name)
            files = sorted(p.name for p in tmp.iterdir())
    return HfExportResult(out, model_type, files)


def _plan(spec: ModelSpec, row: HfArchitecture, stored: set[str], path: Path) -> dict[str, list[tuple[str, Any]]]:
    """Each checkpoint tensor -> its parts: (Nima parameter, map), in the parts' order. Every parameter of
    the spec's model must be in the weights file, and every tensor there a parameter: nothing is dropped."""
    with torch.device("meta"):
        wanted = {name for name, _ in build_model(spec).named_parameters()}  # a tied head once, as the embedding
    missing, extra = sorted(wanted - stored), sorted(stored - wanted - {"head.weight"})
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"holds {extra[0]}, which the spec's model has not"
        raise ExportHfError([f"{path}: {what}: the weights do not match nima.json"])
    plan: dict[str, list[tuple[str, Any]]] = {}
    for entry in row.weights:
        for placed in entry.expand(spec):
            if placed.nima not in wanted:
                continue  # a parameter this spec has not (biases of a bias-free model); a tied head
            plan.setdefault(placed.hf, []).append((placed.nima, placed))
            wanted.discard(placed.nima)
    if wanted:
        raise ExportHfError([f"no {spec.architecture} tensor of the transformers model holds {sorted(wanted)[0]}"])
    for parts in plan.values():
        parts.sort(key=lambda part: getattr(part[1].layout, "index", 0))
    return dict(sorted(plan.items()))


def _give(parts: list[tuple[str, Any]], spec: ModelSpec, stored: Any, meta: bool = False) -> torch.Tensor:
    """The checkpoint tensor made of ``parts``; ``meta``: only its shape, from meta tensors."""
    if meta:
        slices = stored
        tensors = [torch.empty(slices.get_slice(nima).get_shape(), device="meta") for nima, _ in parts]
    else:
        tensors = [stored.get_tensor(nima) for nima, _ in parts]
    return parts[0][1].layout.give(tensors, spec)


def _ids(spec: ModelSpec) -> dict[str, Any]:
    """The special ids a config and a generation config carry: the end tokens, and an encoder-decoder's
    start and padding tokens where the spec names them."""
    gen = spec.generation
    eos = gen.eos_token_ids
    ids: dict[str, Any] = {"eos_token_id": (eos[0] if len(eos) == 1 else eos) if eos else None}
    for key in ("decoder_start_token_id", "pad_token_id", "forced_bos_token_id"):
        if getattr(gen, key) is not None:
            ids[key] = getattr(gen, key)
    forced = gen.forced_eos_token_ids
    ids["forced_eos_token_id"] = (forced[0] if len(forced) == 1 else forced) if forced else None
    return ids


def _generation(spec: ModelSpec) -> dict[str, Any]:
    """``generation_config.json`` from the spec's defaults (the keys `nima import` reads back)."""
    gen = asdict(spec.generation)
    data = {key: gen[key] for key in GENERATION_KEYS if key in gen}
    data["early_stopping"] = gen["early_stopping"]
    off = {"top_k": 0, "min_p": 0.0}  # Nima's "off"; transformers reads 0 as a setting of a sampling filter
    data = {key: value for key, value in data.items() if off.get(key, object()) != value}
    if not gen["do_sample"]:  # sampling settings without sampling: transformers warns about each
        data = {key: value for key, value in data.items() if key not in ("temperature", "top_k", "top_p", "min_p")}
    return {**data, **_ids(spec)}
