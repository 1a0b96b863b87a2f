"""The one exception type the training code raises for problems the user can fix.

`nima train` turns a `TrainError` into one ``error: ...`` line and exit code 2, so every
message names the file or spec field to change and never needs a traceback to make sense.
"""

from __future__ import annotations


class TrainError(Exception):
    """Bad input to training: data, run folder, spec field or checkpoint. ``str(err)`` is one line."""


class PeerFailed(TrainError):
    """Another rank of a distributed run failed and reported it; this rank exits quietly."""
