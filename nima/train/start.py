"""Fine-tuning: a run that starts from a model folder's weights (and tokenizer) instead of the spec's init.

``nima train MODEL_DIR --data ...`` takes the folder's ``nima.json`` as the spec, its
``model.safetensors`` as the starting weights and, when the folder has one, its ``tokenizer.json``
to encode the data (an imported model's own tokenizer: the weights only mean something with it).
An encoder-decoder also needs its padding, decoder start and end ids (`nima.train.pairs.start_ids`).
`check_start` reads and checks everything before the run folder is touched: a folder without
weights, a tokenizer with more ids than the model's vocabulary, an encoder-decoder without its
tokenizer or ids, or a run folder that is the model folder itself are refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nima.layout import TOKENIZER_FILE, WEIGHTS_FILE
from nima.spec import ModelSpec
from nima.train.errors import TrainError
from nima.train.pairs import start_ids
from nima.train.tokenizer import TextTokenizer


@dataclass(frozen=True)
class Start:
    """Where a fine-tuning run starts: the folder, its weights file and its tokenizer (None: train one)."""

    folder: Path
    weights: Path
    tokenizer: TextTokenizer | None


def check_start(spec: ModelSpec, folder: Path, run_dir: Path) -> Start:
    """The start of a run from ``folder``; `TrainError` naming the file or field when it cannot be one."""
    if run_dir.resolve() == folder.resolve():
        raise TrainError(f"{run_dir}: is the model folder the run starts from; pass another -o")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise TrainError(f"{folder}: no {WEIGHTS_FILE} to start from (a model folder has nima.json and weights)")
    tokenizer = None
    if (folder / TOKENIZER_FILE).is_file():
        tokenizer = TextTokenizer.load(spec.training.tokenizer, folder / TOKENIZER_FILE)
        if tokenizer.vocab_size > spec.vocab_size:
            raise TrainError(
                f"{folder / TOKENIZER_FILE}: has {tokenizer.vocab_size} ids, more than the model's "
                f"vocab_size {spec.vocab_size}: it is not this model's tokenizer"
            )
    if spec.is_encoder_decoder and (tokenizer is None or start_ids(spec, tokenizer) is None):
        raise TrainError(
            f"{folder}: fine-tuning an encoder-decoder needs its {TOKENIZER_FILE} and its padding, decoder start and "
            "end ids (generation.pad_token_id, decoder_start_token_id and eos_token_ids, which nima import writes; or "
            "a tokenizer trained with <pad>, <s> and </s>, as nima train writes)"
        )
    return Start(folder, weights, tokenizer)
