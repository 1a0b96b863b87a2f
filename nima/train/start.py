"""Fine-tuning: a run that starts from a model folder's weights (and tokenizer) instead of the spec's init.

``nima train MODEL_DIR --data ...`` takes the folder's ``nima.json`` as the spec, its
``model.safetensors`` as the starting weights and, when the folder has one, its ``tokenizer.json``
to encode the data (an imported model's own tokenizer: the weights only mean something with it).
`check_start` reads and checks everything before the run folder is touched: a folder without
weights, a tokenizer with more ids than the model's vocabulary, an encoder-decoder (whose pairs need
the trained specials), or a run folder that is the model folder itself are refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nima.layout import TOKENIZER_FILE, WEIGHTS_FILE
from nima.spec import ModelSpec
from nima.train.errors import TrainError
from nima.train.tokenizer import TextTokenizer


@dataclass(frozen=True)
class Start:
    """Where a fine-tuning run starts: the folder, its weights file and its tokenizer (None: train one)."""

    folder: Path
    weights: Path
    tokenizer: TextTokenizer | None


def check_start(spec: ModelSpec, folder: Path, run_dir: Path) -> Start:
    """The start of a run from ``folder``; `TrainError` naming the file or field when it cannot be one."""
    if spec.architecture != "decoder":
        raise TrainError(
            f"{folder}: fine-tuning an {spec.architecture} from a model folder is not supported yet "
            "(its pairs need the padding, start and end tokens of a tokenizer trained with them)"
        )
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
    return Start(folder, weights, tokenizer)
