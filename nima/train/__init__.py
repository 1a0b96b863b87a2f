"""Training: tokenizer, packed data, AdamW + schedule, the loop, checkpoints, torchrun.

`nima train` calls `train`; every problem the user can fix is a `TrainError` with one line
that names the file or spec field.
"""

from nima.train.errors import PeerFailed, TrainError
from nima.train.interrupt import Interrupted
from nima.train.run import train

__all__ = ["Interrupted", "PeerFailed", "TrainError", "train"]
