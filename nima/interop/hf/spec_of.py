"""The spec a Hugging Face folder imports as, without reading a weight or importing torch: its
``config.json`` through its ``model_type``'s row (`ARCHITECTURES`), and the generation defaults from
``generation_config.json``. `nima import` starts here; `nima info` shows it before an import.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nima.interop.hf.architectures import ARCHITECTURES, HfArchitecture
from nima.interop.hf.config import HfConfig, read_config, read_json_object
from nima.interop.hf.errors import ImportFailure
from nima.spec import ModelSpec, SpecError, spec_from_dict

GENERATION_CONFIG_FILE = "generation_config.json"
# generation_config.json key -> the spec's generation field (same meaning, same name where HF's is Nima's)
GENERATION_KEYS = (
    "max_new_tokens",
    "min_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "num_beams",
    "length_penalty",
    "num_return_sequences",
    "repetition_penalty",
    "no_repeat_ngram_size",
)


def imported_spec(source: Path) -> tuple[HfConfig, HfArchitecture, ModelSpec]:
    """``source``'s config, its architecture's row and the spec it imports as; `ImportFailure` naming the
    key when the folder asks for custom code, has a ``model_type`` Nima does not import, or values its
    row cannot express."""
    config = read_config(source)
    architecture = ARCHITECTURES.get(config.model_type)
    if architecture is None:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise config.refuse("model_type", f"{config.model_type!r} is not supported (supported: {supported})")
    return config, architecture, _spec(source, config, architecture)


def _spec(source: Path, config: HfConfig, architecture: HfArchitecture) -> ModelSpec:
    try:
        data = architecture.spec(config)
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as err:  # a value no config has
        if isinstance(err, ImportFailure):
            raise
        what = "an impossible value" if isinstance(err, ArithmeticError) else "a value of an unexpected type"
        raise ImportFailure(f"{config.path}: {what} ({type(err).__name__}: {str(err)[:200]})") from None
    data["name"] = re.sub(r"[^A-Za-z0-9._-]+", "-", source.resolve().name).strip("-.") or "imported"
    data["generation"] = _generation(source, config, data.get("architecture") == "encoder-decoder")
    try:
        return spec_from_dict(data, source=str(config.path))
    except SpecError as err:
        raise ImportFailure("; ".join(str(p) for p in err.problems)) from None


def _generation(source: Path, config: HfConfig, seq2seq: bool) -> dict[str, Any]:
    """The spec's generation defaults from ``generation_config.json``, its end tokens (and an
    encoder-decoder's start and padding tokens) from either file."""
    path = source / GENERATION_CONFIG_FILE
    found = read_json_object(path) if path.is_file() else {}
    section = {key: found[key] for key in GENERATION_KEYS if found.get(key) is not None}
    if isinstance(found.get("early_stopping"), bool) or found.get("early_stopping") == "never":
        section["early_stopping"] = found["early_stopping"]
    eos = HfConfig(path, found).eos_ids() or config.eos_ids()
    if eos:
        section["eos_token_ids"] = eos
    bos = found.get("forced_bos_token_id", config.get("forced_bos_token_id"))
    if isinstance(bos, int) and not isinstance(bos, bool):
        section["forced_bos_token_id"] = bos
    forced = found.get("forced_eos_token_id", config.get("forced_eos_token_id"))
    forced = forced if isinstance(forced, list) else [] if forced is None else [forced]
    if forced and all(isinstance(t, int) and not isinstance(t, bool) for t in forced):
        section["forced_eos_token_ids"] = forced
    if seq2seq:
        for key in ("pad_token_id", "decoder_start_token_id"):
            value = found.get(key, config.get(key))
            if isinstance(value, int) and not isinstance(value, bool):
                section[key] = value
        section.setdefault("decoder_start_token_id", section.get("pad_token_id"))  # T5 starts from padding
    return section
